"""Find the Debian tools the local environment runs, installing them (root, Debian) when missing.

``apt-get`` runs with a time limit and with a temporary ``policy-rc.d`` that stops package
scripts from starting system services (a system ``docker-registry`` or ``nginx`` would take
ports we want).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from release.errors import UserError

APT_TIMEOUT_S = 600
SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin"]
)
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

# binary -> Debian package that provides it
PACKAGES = {
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "nginx": "nginx",
    "skopeo": "skopeo",  # registry copies and reads (release/skopeo.py)
}


def which(binary: str) -> str | None:
    return shutil.which(binary, path=SEARCH_PATH)


def can_install() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and which("apt-get") is not None


def _apt(args: list[str], log: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(
            ["apt-get", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"apt-get {' '.join(args)} did not finish within {APT_TIMEOUT_S} s") from None


def ensure_binary(binary: str, log: Callable[[str], None]) -> str:
    """The path of ``binary``; installs its Debian package first when it is missing."""
    found = which(binary)
    if found:
        return found
    package = PACKAGES[binary]
    if not can_install():
        raise UserError(
            f"{binary} is not installed and cannot be installed from here (needs root on Debian); "
            f"install the Debian package '{package}' (apt-get install {package}) and run again"
        )
    log(f"installing {package} (apt-get, up to {APT_TIMEOUT_S} s)...")
    own_policy = not POLICY_RC_D.exists()
    if own_policy:
        POLICY_RC_D.write_text("#!/bin/sh\n# written by genaiops local up while installing\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        args = ["install", "-y", "--no-install-recommends", package]
        result = _apt(args, log)
        if result.returncode != 0:
            log("apt-get install failed; refreshing the package lists (apt-get update) and retrying...")
            _apt(["update"], log)
            result = _apt(args, log)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise UserError(f"apt-get install {package} failed:\n{tail}")
    finally:
        if own_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    found = which(binary)
    if not found:
        raise UserError(f"apt-get installed {package} but {binary} is still not on the PATH")
    return found
