#!/usr/bin/env python3
"""Run uv, installing it first if this machine has none.

Only Python 3.11+ is needed: uv is installed from PyPI into .data/tools (a private venv), so
nothing is written outside the checkout. Usage: python3 .ci/uv.py run pytest
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".data" / "tools"


def find_uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    uv_bin = TOOLS / ("Scripts" if os.name == "nt" else "bin") / "uv"
    if not uv_bin.exists():
        print("installing uv into .data/tools (first run only)...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
        pip = TOOLS / ("Scripts" if os.name == "nt" else "bin") / "pip"
        subprocess.run([str(pip), "install", "--quiet", "uv"], check=True)
    return str(uv_bin)


def main() -> int:
    if sys.version_info < (3, 11):
        print("Python 3.11 or newer is required", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    cmd = [find_uv(), *sys.argv[1:]]
    if os.name == "nt":  # pragma: no cover
        return subprocess.call(cmd)
    os.execv(cmd[0], cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
