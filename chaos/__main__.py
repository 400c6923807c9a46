"""`python -m chaos [--small] [--accounts N] [--seed S]` (`make chaos`): one fault-injection run
against the real stack; prints the report and writes it, with every process's log, to --log-dir.
Exits 1 when any account, gate answer or counter disagrees with the reference."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

from chaos.report import render
from chaos.run import FULL, SMALL, run


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--small", action="store_true", help=f"{SMALL.accounts} accounts (the test suite's run)")
    parser.add_argument("--accounts", type=int, help=f"accounts (default {FULL.accounts})")
    parser.add_argument("--seed", type=int, default=1, help="the workload's and the faults' seed (default 1)")
    parser.add_argument("--log-dir", type=Path, default=Path(".run/chaos"), help="default .run/chaos")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    size = SMALL if args.small else FULL
    if args.accounts:
        size = dataclasses.replace(size, accounts=args.accounts)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    outcome = asyncio.run(run(size, args.seed, args.log_dir, log))
    report = render(outcome)
    print(report)
    (args.log_dir / "report.md").write_text(report + "\n", encoding="utf-8")
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
