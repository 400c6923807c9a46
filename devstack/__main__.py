"""Developer commands: `run` (the local stack) and `protos [--check]` (generated code)."""

import sys
from pathlib import Path

from devstack import protos, stack

ROOT = Path(__file__).resolve().parents[1]
USAGE = "usage: python -m devstack run | protos [--check]"


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "run":
        return stack.run(ROOT)
    if command == "protos":
        return protos.main(ROOT, check="--check" in argv)
    print(USAGE, file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
