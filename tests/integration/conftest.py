"""The integration suite runs against a real subscription (``make integration ENV=dev``).

Every test marked ``integration`` is skipped, with one line saying why, unless the machine has
Azure credentials and what a real apply needs; ``make test`` deselects the marker altogether
(pyproject.toml ``addopts``)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

ALWAYS = ("AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID")


def needed(env: str) -> list[str]:
    """Variables the run needs: the ``${VAR}`` (without a default) and ``secret: {env: VAR}``
    references of config/<env>.yaml, plus the subscription and tenant."""
    from release.config import CONFIG_DIR

    text = (CONFIG_DIR / f"{env}.yaml").read_text()
    names = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", text)) | set(
        re.findall(r"\benv:\s*([A-Z][A-Z0-9_]*)", text)
    )
    return sorted(set(ALWAYS) | names)


def why_not() -> str | None:
    """None when the suite can run here, else the one-line reason it cannot."""
    if os.environ.get("GENAIOPS_INTEGRATION") != "1":  # never by accident, e.g. `pytest -m "not slow"`
        return "the integration suite creates billed resources: run it with `make integration ENV=dev`"
    missing = [name for name in needed(os.environ.get("GENAIOPS_ENV", "dev")) if not os.environ.get(name)]
    if missing:
        return f"no Azure credentials/settings for the integration suite: set {', '.join(missing)}"
    if shutil.which("terraform") is None:
        return "terraform is not on PATH (>= 1.11 is needed to apply the stack)"
    from azure.core.exceptions import ClientAuthenticationError

    from release.azure.clients import ARM_SCOPE, default_credential

    try:
        default_credential().get_token(ARM_SCOPE)
    except ClientAuthenticationError:
        return "no Azure credentials: az login, or AZURE_CLIENT_ID + AZURE_FEDERATED_TOKEN_FILE (workload identity)"
    return None


@pytest.fixture(scope="session")
def azure_ready() -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
