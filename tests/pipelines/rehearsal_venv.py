"""Rehearsal stand-in for the pip part of `make install` (tests/pipelines/rehearsal.py only).

Run in a fresh clone just before the real `make install` step: creates ``.venv`` (no pip) whose
``site-packages`` points at the test run's installed packages and at the clone's own source
(the clone's code wins), writes ``.venv/bin/genaiops`` the way pip's console-script entry point
does, links the other tools (ruff, mypy, pytest, checkov), and marks the venv installed so that
`make install` then finds nothing to do. Usage: python rehearsal_venv.py <prefix of the test venv>
"""

import os
import subprocess
import sys
from pathlib import Path

source_prefix = Path(sys.argv[1])
clone = Path.cwd()
venv = clone / ".venv"
base = getattr(sys, "_base_executable", sys.executable)
subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
version = f"python{sys.version_info.major}.{sys.version_info.minor}"
source_site = source_prefix / "lib" / version / "site-packages"
own_site = venv / "lib" / version / "site-packages"
(own_site / "rehearsal.pth").write_text(f"{clone}\n{source_site}\n")
script = venv / "bin" / "genaiops"
script.write_text(
    f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom release.cli import main\nsys.exit(main())\n"
)
script.chmod(0o755)
python = venv / "bin" / "python"
for tool in sorted((source_prefix / "bin").iterdir()):
    target = venv / "bin" / tool.name
    if target.exists() or tool.name.startswith(("python", "activate", "pip")) or not tool.is_file():
        continue
    head = tool.read_bytes()[:256]
    if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
        # a console script: same code, run by this venv's interpreter
        body = tool.read_text(encoding="utf-8").split("\n", 1)[1]
        target.write_text(f"#!{python}\n{body}", encoding="utf-8")
        target.chmod(0o755)
    else:
        target.symlink_to(tool)
stamp = venv / ".installed"
stamp.touch()
later = max(p.stat().st_mtime for p in (clone / "pyproject.toml", clone / "requirements.lock")) + 1
os.utime(stamp, (later, later))
print(f"rehearsal: .venv links {source_site} (pip install replaced)")
