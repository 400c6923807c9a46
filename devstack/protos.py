"""Generates the Python code and type stubs for `proto/`, or checks the committed copy is current."""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

PACKAGES = ("selfserve/entitlement/v1", "selfserve/checkout/v1")
# Written by hand inside selfserve/: never generated, removed or compared.
HANDWRITTEN = ("client",)


def generate(repo_root: Path, out_root: Path) -> None:
    from grpc_tools import protoc

    proto_root = repo_root / "proto"
    include = str(resources.files("grpc_tools") / "_proto")
    files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in ("selfserve", "selfserve/entitlement", "selfserve/checkout", *PACKAGES):
        (out_root / package / "__init__.py").touch()
    (out_root / "selfserve" / "py.typed").touch()


def regenerate(repo_root: Path) -> None:
    target = repo_root / "selfserve"
    if target.is_dir():
        for entry in target.iterdir():
            if entry.name not in HANDWRITTEN:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    generate(repo_root, repo_root)


def stale_files(repo_root: Path) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(repo_root, fresh)
        return _differences(fresh / "selfserve", repo_root / "selfserve", "selfserve", HANDWRITTEN)


def _differences(fresh: Path, committed: Path, label: str, ignore: tuple[str, ...] = ()) -> list[str]:
    if not committed.is_dir():
        return [label]
    cmp = filecmp.dircmp(fresh, committed, ignore=["__pycache__", *ignore])
    found = [f"{label}/{name}" for name in cmp.left_only + cmp.right_only + cmp.diff_files]
    found += [f"{label}/{name}" for name in cmp.common_files if not _same(fresh / name, committed / name)]
    for sub in cmp.common_dirs:
        found += _differences(fresh / sub, committed / sub, f"{label}/{sub}")
    return sorted(set(found))


def _same(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def main(repo_root: Path, check: bool) -> int:
    if not check:
        regenerate(repo_root)
        print("generated selfserve/ from proto/")
        return 0
    stale = stale_files(repo_root)
    if stale:
        print("generated code is out of date; run `make protos` and commit:", *stale, sep="\n  ")
        return 1
    print("generated code is up to date")
    return 0

