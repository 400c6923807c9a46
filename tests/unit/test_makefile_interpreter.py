"""Which interpreter `make` builds the virtualenv from: the system's python3 when it is 3.11 or
newer and can make a virtualenv, else python3 on PATH; `PYTHON=` overrides both. Read from the
commands `make -n` would run, so nothing is built."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def venv_command(*assignments: str) -> str:
    """The first command `make` would run to build the virtualenv from scratch."""
    # As from a shell: not the settings of a make this test may run under (`make test`).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON")}
    out = subprocess.run(["make", "--no-print-directory", "-n", "-B", ".venv/.installed", *assignments],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0]


def interpreter(tmp_path: Path, name: str, exit_code: int) -> Path:
    """A stand-in for the system's python3 that answers the Makefile's check with `exit_code`."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    path.chmod(0o755)
    return path


def test_a_usable_system_python_is_taken(tmp_path: Path) -> None:
    usable = interpreter(tmp_path, "python3-release", 0)
    assert venv_command(f"SYSTEM_PYTHON={usable}") == f"{usable} -m venv .venv"


def test_a_system_python_too_old_or_without_venv_falls_back_to_path(tmp_path: Path) -> None:
    refused = interpreter(tmp_path, "python3-old", 1)
    assert venv_command(f"SYSTEM_PYTHON={refused}") == "python3 -m venv .venv"


def test_no_system_python_falls_back_to_path(tmp_path: Path) -> None:
    assert venv_command(f"SYSTEM_PYTHON={tmp_path / 'absent'}") == "python3 -m venv .venv"


def test_python_given_on_the_command_line_wins(tmp_path: Path) -> None:
    usable = interpreter(tmp_path, "python3-release", 0)
    assert venv_command(f"SYSTEM_PYTHON={usable}", "PYTHON=python3.12") == "python3.12 -m venv .venv"
