"""Dataset files, read the way prompt flow's batch runs read them: the one reader of the toolkit.

Prompt flow 1.18.5 loads a run's ``data`` with ``promptflow._utils.load_data`` (pandas, every value
kept as written: ``dtype=object``, ``keep_default_na=False``), choosing the format by the file's
suffix (https://github.com/microsoft/promptflow/blob/main/src/promptflow-core/promptflow/_utils/load_data.py):

* ``.jsonl`` (and any unknown suffix): JSON Lines (https://jsonlines.org/): UTF-8, one JSON object
  per record, a record ends only at ``\\n`` (``\\r\\n`` too). Unicode line separators such as
  U+2028 / U+2029 / U+0085 inside strings are data, never record ends.
* ``.csv`` / ``.tsv``: a header row, then one row per record (RFC 4180 quoting; a quoted field may
  span lines). Every value is a string, an empty cell is ``""``.
* ``.json``: a JSON array of objects (or an object of columns: lists, or ``{row index: value}``).
* ``.parquet``: read through pandas when ``pyarrow`` is installed (it is not a dependency of the
  toolkit: convert to JSON Lines otherwise).
* a folder: every file in it and its subfolders, in path order (prompt flow uses directory order).

Stricter than prompt flow, on purpose, with the file and line in each message: a CSV/TSV row
with fewer or more fields than the header (pandas fills missing cells with NaN and rejects extra
ones as "Expected N fields in line L, saw M"), a JSON Lines record that is not an object, a
duplicate CSV header, an empty dataset.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.errors import UserError

log = logging.getLogger(__name__)

FORMATS = (".jsonl", ".csv", ".tsv", ".json", ".parquet")


class DatasetError(UserError):
    """A dataset file cannot be read; the message names the file, the line and the fix."""


@dataclass
class DataRows:
    """The records of one dataset source, with where each one came from (for messages)."""

    source: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # "<file>: line <n>" of each row

    @property
    def columns(self) -> set[str]:
        out: set[str] = set()
        for row in self.rows:
            out.update(row)
        return out

    def extend(self, other: DataRows) -> None:
        self.rows.extend(other.rows)
        self.origins.extend(other.origins)


def json_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the non-blank lines of JSON Lines text, split at ``\\n`` only.

    ``str.splitlines`` also splits at U+2028, U+2029, U+0085, \\x1c-\\x1e, \\v and \\f, which JSON
    allows unescaped inside strings: a record holding one of them would be cut in two.
    """
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip(" \t\r"):
            yield number, line


def read_dataset(path: Path, shown: str | None = None) -> DataRows:
    """Every record of the dataset file or folder ``path``, as prompt flow would load it.

    ``shown`` is how messages name the file (default: the path). Raises :class:`DatasetError`
    for a missing or unreadable file, a malformed record or an empty dataset.
    """
    shown = shown or str(path)
    if path.is_dir():
        data = DataRows(path)
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            try:
                data.extend(_read_file(file, f"{shown}/{file.relative_to(path)}"))
            except DatasetError as exc:
                if file.suffix.lower() in FORMATS:
                    raise
                # prompt flow skips files of an unknown format it cannot read as JSON Lines
                log.warning("%s: skipped (%s)", file, exc)
        if not data.rows:
            raise DatasetError(
                f"{shown}: no records in this folder; it needs files in one of {', '.join(FORMATS)}"
            )
        return data
    if not path.is_file():
        raise DatasetError(f"{shown}: dataset file does not exist; fix 'source' or add the file")
    data = _read_file(path, shown)
    if not data.rows:
        raise DatasetError(f"{shown}: the dataset has no records; add lines or fix 'source'")
    return data


def _read_file(path: Path, shown: str) -> DataRows:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_delimited(path, shown, "\t" if suffix == ".tsv" else ",")
    if suffix == ".json":
        return _read_json(path, shown)
    if suffix == ".parquet":
        return _read_parquet(path, shown)
    return _read_json_lines(path, shown)


def _text(path: Path, shown: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{shown}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8"
        ) from None


def _read_json_lines(path: Path, shown: str) -> DataRows:
    data = DataRows(path)
    for number, line in json_lines(_text(path, shown)):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = (
                ""
                if path.suffix.lower() == ".jsonl"
                else (
                    f"; files ending in {path.suffix or '(no suffix)'} are read as JSON Lines, "
                    f"supported formats: {', '.join(FORMATS)}"
                )
            )
            raise DatasetError(
                f"{shown}: line {number}: not a JSON Lines record ({exc.msg}, column {exc.colno}){hint}"
            ) from None
        if not isinstance(record, dict):
            raise DatasetError(
                f"{shown}: line {number}: each JSON Lines record must be a JSON object "
                f'({{"column": value, ...}}), got {type(record).__name__}'
            )
        data.rows.append(record)
        data.origins.append(f"{shown}: line {number}")
    return data


def _read_delimited(path: Path, shown: str, delimiter: str) -> DataRows:
    data = DataRows(path)
    kind = "TSV" if delimiter == "\t" else "CSV"
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, dialect="excel-tab" if delimiter == "\t" else "excel", strict=True)
        header: list[str] | None = None
        previous_end = 0
        try:
            for record in reader:
                start, previous_end = previous_end + 1, reader.line_num
                if not record:
                    continue  # a blank line, skipped as pandas does
                if header is None:
                    header = record
                    duplicates = sorted({c for c in header if header.count(c) > 1})
                    if duplicates:
                        raise DatasetError(
                            f"{shown}: line {start}: duplicate column name(s) {duplicates} in the "
                            f"{kind} header; give every column its own name"
                        )
                    continue
                if len(record) != len(header):
                    raise DatasetError(
                        f"{shown}: line {start}: expected {len(header)} fields, saw {len(record)} "
                        f"(header: {', '.join(header)}); "
                        + (
                            "add the missing values (an empty value is two delimiters in a row)"
                            if len(record) < len(header)
                            else 'quote values that contain the delimiter ("a, b")'
                        )
                    )
                data.rows.append(dict(zip(header, record, strict=True)))
                data.origins.append(f"{shown}: line {start}")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{shown}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from None
        except csv.Error as exc:
            raise DatasetError(f"{shown}: line {reader.line_num}: not valid {kind} ({exc})") from None
    return data


def _read_json(path: Path, shown: str) -> DataRows:
    try:
        value = json.loads(_text(path, shown))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{shown}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    records: list[Any]
    if isinstance(value, list):
        records = value
    elif isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        lengths = {len(v) for v in value.values()}
        if len(lengths) != 1:
            raise DatasetError(
                f"{shown}: columns of different lengths {sorted(lengths)}; one value per row in each column"
            )
        records = [dict(zip(value, row, strict=True)) for row in zip(*value.values(), strict=True)]
    elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        # pandas' default "columns" orient: {column: {row index: value}}
        index = list(dict.fromkeys(k for column in value.values() for k in column))
        records = [{c: cells[i] for c, cells in value.items() if i in cells} for i in index]
    else:
        raise DatasetError(
            f'{shown}: a .json dataset must be an array of objects ([{{"column": value}}, ...]); '
            "or use JSON Lines (.jsonl)"
        )
    data = DataRows(path)
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise DatasetError(
                f"{shown}: record {number}: must be a JSON object, got {type(record).__name__}"
            )
        data.rows.append(record)
        data.origins.append(f"{shown}: record {number}")
    return data


def _read_parquet(path: Path, shown: str) -> DataRows:
    try:
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas' parquet engine)
    except ImportError:
        raise DatasetError(
            f"{shown}: Parquet needs the pyarrow package, which is not installed; convert the file to "
            "JSON Lines (pandas: df.to_json(path, orient='records', lines=True)) or install pyarrow"
        ) from None
    frame = pd.read_parquet(path)
    data = DataRows(path)
    for number, record in enumerate(frame.to_dict(orient="records"), start=1):
        data.rows.append({str(k): v for k, v in record.items()})
        data.origins.append(f"{shown}: row {number}")
    return data
