"""`python -m bench [scenario ...] [--quick] [--profile]`: runs the scenarios, prints the table and
writes it to bench/results/latest.md (raw numbers in latest.json)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from . import (
    batching,
    checkgate,
    client,
    entitlements,
    exclusion,
    history,
    propagation,
    signature,
    watchers,
    webhook,
    webhook_large,
)
from .context import Context
from .db import Server
from .report import NOT_MEASURED, Row, failed_row, table, write

Scenario = Callable[[Context], Awaitable[list[Row]]]
SCENARIOS: dict[str, tuple[Scenario, str, str]] = {
    "webhook": (webhook.run, webhook.NAME, webhook.TARGET),
    "webhook_large": (webhook_large.run, webhook_large.NAME, webhook_large.TARGET),
    "exclusion": (exclusion.run, exclusion.NAME, exclusion.TARGET),
    "batching": (batching.run, batching.NAME, batching.TARGET),
    "signature": (signature.run, signature.NAME, signature.TARGET),
    "checkgate": (checkgate.run, checkgate.NAME, checkgate.TARGET),
    "entitlements": (entitlements.run, entitlements.NAME, entitlements.TARGET),
    "propagation": (propagation.run, propagation.NAME, propagation.TARGET),
    "watchers": (watchers.run, watchers.NAME, watchers.TARGET),
    "history": (history.run, history.NAME, history.TARGET),
    "client": (client.run, client.NAME, client.TARGET),
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="scenario",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="5 s loads instead of 10 s (a smoke run)")
    parser.add_argument("--accounts", type=int, default=1_000_000,
                        help="accounts in the larger GetEntitlements and CheckGate database (default 1,000,000)")
    parser.add_argument("--history-accounts", type=int, default=100_000,
                        help="accounts whose billing history webhook_large stores (default 100,000: 1.1 million "
                             "events)")
    parser.add_argument("--profile", action="store_true",
                        help="attach py-spy to the server under test; writes results/profile-*.txt and "
                             "the table to results/profiled.md instead of latest.md")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


async def main(args: argparse.Namespace) -> list[Row]:
    server = await Server.find()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            ctx = Context(server, Path(work), load_s=5 if args.quick else 10, profile=args.profile,
                          accounts=args.accounts, history_accounts=args.history_accounts)
            for name in args.scenarios or list(SCENARIOS):
                run, title, target = SCENARIOS[name]
                print(f"running {name} ...", file=sys.stderr, flush=True)
                try:
                    rows += await run(ctx)
                except Exception as exc:  # one failed scenario still leaves the others' figures
                    rows.append(failed_row(title, target, exc))
                    print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        await server.drop_all()
    return rows


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    arguments = parse(sys.argv[1:])
    started = datetime.now(UTC)
    results = asyncio.run(main(arguments))
    # Figures taken under a profiler carry its overhead: they never replace the latest plain run.
    markdown, raw = write(results, " ".join(["python -m bench", *sys.argv[1:]]), started,
                          "profiled" if arguments.profile else "latest")
    print(table(results))
    print(f"\nwritten to {markdown} and {raw}")
    # Missed targets are findings, reported in the table; only a scenario that could not run fails.
    sys.exit(1 if any(r.measured == NOT_MEASURED for r in results) else 0)
