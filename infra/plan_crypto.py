"""Encryption of the saved Terraform plan before CI publishes it as an artifact.

A saved plan (``plan.tfplan``) embeds the prior state, which holds secrets such as storage
account access keys and the App Insights connection string ("Terraform state and plan files
contain ... sensitive values": https://developer.hashicorp.com/terraform/language/manage-sensitive-data).
The plan stage therefore publishes ``plan.tfplan.enc`` only; the apply stage decrypts it with
the same key from the secret store (variable group / GitHub environment secret
``GENAIOPS_PLAN_KEY``) and applies exactly that plan.

File format: ``MAGIC`` + 16-byte salt + a Fernet token (AES-128-CBC + HMAC-SHA256, so a
tampered or truncated file is refused). The Fernet key is derived from the passphrase with
scrypt (n=2**14, r=8, p=1; RFC 7914). Use a random passphrase of at least 32 characters, e.g.
``openssl rand -base64 32``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from release.errors import UserError

KEY_ENV = "GENAIOPS_PLAN_KEY"
MAGIC = b"genaiops-plan-v1\n"
MIN_KEY_LENGTH = 32
_SALT_BYTES = 16


def running_in_ci(environ: Mapping[str, str]) -> bool:
    """True on Azure Pipelines (``TF_BUILD=True``) and GitHub Actions (``GITHUB_ACTIONS=true``)."""
    return environ.get("TF_BUILD", "").lower() == "true" or environ.get("GITHUB_ACTIONS", "") == "true"


def plan_key(environ: Mapping[str, str], *, required: bool) -> str | None:
    """The passphrase from ``GENAIOPS_PLAN_KEY``; a :class:`UserError` when required and unusable."""
    key = environ.get(KEY_ENV, "")
    if key.startswith("$("):  # Azure DevOps passes an undefined secret as its literal macro
        key = ""
    if not key:
        if required:
            raise UserError(
                f"{KEY_ENV} is not set: in CI the saved plan is published as an artifact and holds "
                "secrets from the state, so it is encrypted; add a secret variable "
                f"{KEY_ENV} (e.g. `openssl rand -base64 32`) to the variable group / environment "
                "(docs/azure-devops.md, docs/github-actions.md); nothing was planned or applied"
            )
        return None
    if len(key) < MIN_KEY_LENGTH:
        raise UserError(
            f"{KEY_ENV} is {len(key)} characters long: use a random value of at least "
            f"{MIN_KEY_LENGTH} characters (e.g. `openssl rand -base64 32`)"
        )
    return key


def _fernet(passphrase: str, salt: bytes) -> Fernet:
    kdf = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(passphrase.encode())))


def encrypt_file(source: Path, target: Path, passphrase: str) -> None:
    """Write ``target`` (mode 0600) holding ``source`` encrypted."""
    salt = os.urandom(_SALT_BYTES)
    token = _fernet(passphrase, salt).encrypt(source.read_bytes())
    _write_private(target, MAGIC + salt + token)


def decrypt_file(source: Path, target: Path, passphrase: str) -> None:
    """Write ``target`` (mode 0600) from an encrypted ``source``; refuses wrong keys and tampering."""
    data = source.read_bytes()
    if not data.startswith(MAGIC):
        raise UserError(f"{source} is not a genaiops encrypted plan (wrong header)")
    salt = data[len(MAGIC) : len(MAGIC) + _SALT_BYTES]
    token = data[len(MAGIC) + _SALT_BYTES :]
    try:
        plain = _fernet(passphrase, salt).decrypt(token)
    except InvalidToken:
        raise UserError(
            f"{source} cannot be decrypted with {KEY_ENV}: the key differs from the plan stage's, "
            "or the file was modified; run the plan stage again"
        ) from None
    _write_private(target, plain)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
