"""Node.js packages the test suite type-checks and runs (the TypeScript client, Stripe's types):
Node.js 20 or newer is required, never skipped, and each package is installed with `npm ci` from
its lock file only when that file changed."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

STAMP = Path("node_modules") / ".package-lock.sha256"


def node_tools(needed_for: str) -> tuple[str, str]:
    """node and npm, Node.js 20 or newer; the test fails, never skips, without them."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(f"{needed_for} needs Node.js 20 or newer with npm on PATH (`node`, `npm`); neither may be "
                    "missing where the test suite runs")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    found = re.fullmatch(r"v(\d+)\..*", version)
    if found is None or int(found.group(1)) < 20:
        pytest.fail(f"{needed_for} needs Node.js 20 or newer; {node} is {version}")
    return node, npm


def run(package: Path, *command: str, timeout_s: float) -> None:
    """Runs `command` in `package`; a failure fails the test with its output."""
    done = subprocess.run(command, cwd=package, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` in {package} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")


def install(package: Path, npm: str, *options: str) -> None:
    """`npm ci` in `package` unless its node_modules were installed from the same lock file."""
    lock_hash = hashlib.sha256((package / "package-lock.json").read_bytes()).hexdigest()
    stamp = package / STAMP
    if not stamp.exists() or stamp.read_text().strip() != lock_hash:
        run(package, npm, "ci", "--no-audit", "--no-fund", *options, timeout_s=600)
        stamp.write_text(lock_hash + "\n")
