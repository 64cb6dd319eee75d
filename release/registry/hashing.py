"""Deterministic content hashes for flows and datasets.

The hash covers the sorted relative paths and the bytes of every file, so it does not
depend on file-system order, timestamps or the machine. Caches and run artefacts
(``__pycache__``, ``.promptflow``, ``.runs``, ``*.pyc``) are excluded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

EXCLUDED_DIRS = frozenset({"__pycache__", ".promptflow", ".runs", ".pytest_cache", ".mypy_cache", ".git"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def content_files(path: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(relative posix path, file)`` for every hashed file, sorted by relative path."""
    if path.is_file():
        yield path.name, path
        return
    found: list[tuple[str, Path]] = []
    for file in path.rglob("*"):
        rel = file.relative_to(path)
        if any(part in EXCLUDED_DIRS for part in rel.parts):
            continue
        if not file.is_file() or file.name.endswith(EXCLUDED_SUFFIXES):
            continue
        found.append((rel.as_posix(), file))
    yield from sorted(found)


def content_hash(path: Path) -> str:
    """``sha256:<hex>`` of a file or folder's content (paths and bytes)."""
    digest = hashlib.sha256()
    for rel, file in content_files(path):
        data = file.read_bytes()
        digest.update(rel.encode("utf-8") + b"\0")
        digest.update(str(len(data)).encode("ascii") + b"\0")
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def hash_text(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()
