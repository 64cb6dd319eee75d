"""`make test` on a hosted agent runs as a non-root user with passwordless sudo (pipelines.md 3):
release/local_env/packages.py installs missing Debian packages through `sudo -n`.

The test runs packages.py as a non-root user (uid 65534 when the suite runs as root) with a
recording `sudo` on PATH that behaves like sudo's non-interactive mode: `-n` is required, a
"password required" mode exits 1. It records instead of installing, then provides the binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
pytestmark = pytest.mark.skipif(
    not (REPO / ".git").exists() or not list((REPO / ".venv" / "lib").glob("python3.*/site-packages")),
    reason="needs a git checkout with its installed .venv",
)
FAKE_SUDO = """#!/bin/sh
# recording stand-in for sudo (tests only)
echo "$*" >> "$SUDO_LOG"
[ "$1" = "-n" ] || { echo "sudo: a terminal is required" >&2; exit 1; }
[ -e "$SUDO_NEEDS_PASSWORD" ] && { echo "sudo: a password is required" >&2; exit 1; }
shift
case "$1" in
  true) exit 0 ;;
  env) printf '#!/bin/sh\\nexit 0\\n' > "$FAKE_BIN/zz-fake-tool"; chmod 755 "$FAKE_BIN/zz-fake-tool"; exit 0 ;;
  sh|rm) exit 0 ;;
esac
exit 1
"""
PROBE = """
import sys
from release.local_env import packages
packages.PACKAGES["zz-fake-tool"] = "zz-fake-package"
try:
    print("FOUND", packages.ensure_binary("zz-fake-tool", print))
except Exception as exc:
    print("ERROR", exc)
"""


@pytest.fixture
def sandbox() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="genaiops-nonroot-"))
    root.chmod(0o777)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(sandbox: Path, needs_password: bool) -> tuple[str, list[str]]:
    fake_bin = sandbox / "bin"
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / "sudo").write_text(FAKE_SUDO)
    (fake_bin / "sudo").chmod(0o755)
    fake_bin.chmod(0o777)
    log = sandbox / "sudo.log"
    log.touch()
    log.chmod(0o666)
    marker = sandbox / "needs-password"
    if needs_password:
        marker.touch()
    python = f"/usr/bin/python3.{sys.version_info.minor}"  # readable by the non-root user
    site = next((REPO / ".venv" / "lib").glob("python3.*/site-packages"), None)
    env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(site)]),
        "SUDO_LOG": str(log),
        "SUDO_NEEDS_PASSWORD": str(marker),
        "FAKE_BIN": str(fake_bin),
        "HOME": str(sandbox),
    }
    command = [python, "-c", PROBE]
    if os.geteuid() == 0:
        command = [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    return proc.stdout + proc.stderr, log.read_text().splitlines()


@pytest.mark.skipif(not Path("/etc/debian_version").exists(), reason="Debian only (apt-get)")
@pytest.mark.skipif(not (REPO / ".venv").is_dir(), reason="needs the project's .venv")
def test_missing_package_is_installed_with_sudo_n_when_not_root(sandbox: Path) -> None:
    out, calls = _run(sandbox, needs_password=False)
    assert f"FOUND {sandbox}/bin/zz-fake-tool" in out, out
    assert "-n true" in calls
    assert (
        "-n env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends zz-fake-package"
        in calls
    )
    if not Path("/usr/sbin/policy-rc.d").exists():  # written and removed through sudo as well
        assert any(c.startswith("-n sh -c cat > /usr/sbin/policy-rc.d") for c in calls)
        assert "-n rm -f /usr/sbin/policy-rc.d" in calls


@pytest.mark.skipif(not Path("/etc/debian_version").exists(), reason="Debian only (apt-get)")
@pytest.mark.skipif(not (REPO / ".venv").is_dir(), reason="needs the project's .venv")
def test_sudo_that_asks_for_a_password_gives_a_clear_error(sandbox: Path) -> None:
    out, calls = _run(sandbox, needs_password=True)
    assert "ERROR zz-fake-tool is not installed and cannot be installed from here" in out, out
    assert "passwordless sudo" in out and "sudo apt-get install zz-fake-package" in out
    assert not any("apt-get" in c for c in calls)
