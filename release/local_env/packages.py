"""Find the Debian tools the local environment runs, installing them (Debian) when missing.

``apt-get`` runs with a time limit and with a temporary ``policy-rc.d`` that stops package
scripts from starting system services (a system ``docker-registry`` or ``nginx`` would take
ports we want). As root it runs directly; as any other user it runs through ``sudo -n``
(non-interactive: fails at once instead of asking for a password), which is how CI hosted
agents work: Azure DevOps and GitHub ``ubuntu-24.04`` runners are a non-root user with
passwordless sudo (https://github.com/actions/runner-images, Ubuntu2404-Readme.md: sudo).
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
    "chromium": "chromium",  # headless browser: the report page tests
    "skopeo": "skopeo",  # registry copies and reads (release/skopeo.py)
}


def which(binary: str) -> str | None:
    return shutil.which(binary, path=SEARCH_PATH)


def _sudo_works() -> bool:
    sudo = which("sudo")
    if sudo is None:
        return False
    try:
        proc = subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def privileged() -> list[str]:
    """The prefix that runs a command as root: ``[]`` for root, ``["sudo", "-n"]`` otherwise."""
    return [] if os.geteuid() == 0 else [which("sudo") or "sudo", "-n"]


def can_install() -> bool:
    """Debian with apt-get, and either root or passwordless ``sudo -n``."""
    if not Path("/etc/debian_version").exists() or which("apt-get") is None:
        return False
    return os.geteuid() == 0 or _sudo_works()


def _apt(args: list[str], log: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # sudo resets the environment: pass DEBIAN_FRONTEND through `env`
    prefix = [*privileged(), "env", "DEBIAN_FRONTEND=noninteractive"] if os.geteuid() != 0 else []
    try:
        return subprocess.run(
            [*prefix, "apt-get", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"apt-get {' '.join(args)} did not finish within {APT_TIMEOUT_S} s") from None


_POLICY = "#!/bin/sh\n# written by genaiops local up while installing\nexit 101\n"


def _write_policy() -> None:
    if os.geteuid() == 0:
        POLICY_RC_D.write_text(_POLICY)
        POLICY_RC_D.chmod(0o755)
        return
    proc = subprocess.run(
        [*privileged(), "sh", "-c", f"cat > {POLICY_RC_D} && chmod 0755 {POLICY_RC_D}"],
        input=_POLICY,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise UserError(f"sudo -n could not write {POLICY_RC_D}: {proc.stderr.strip()[:200]}")


def _remove_policy() -> None:
    if os.geteuid() == 0:
        POLICY_RC_D.unlink(missing_ok=True)
        return
    subprocess.run(
        [*privileged(), "rm", "-f", str(POLICY_RC_D)], capture_output=True, timeout=60, check=False
    )


def ensure_binary(binary: str, log: Callable[[str], None]) -> str:
    """The path of ``binary``; installs its Debian package first when it is missing."""
    found = which(binary)
    if found:
        return found
    package = PACKAGES[binary]
    if not can_install():
        raise UserError(
            f"{binary} is not installed and cannot be installed from here (needs root or "
            f"passwordless sudo on Debian); install the Debian package '{package}' "
            f"(sudo apt-get install {package}) and run again"
        )
    log(f"installing {package} (apt-get, up to {APT_TIMEOUT_S} s)...")
    own_policy = not POLICY_RC_D.exists()
    if own_policy:
        _write_policy()
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
            _remove_policy()
    found = which(binary)
    if not found:
        raise UserError(f"apt-get installed {package} but {binary} is still not on the PATH")
    return found
