"""The load generators: wrk for HTTP/1.1, h2load for gRPC, pgbench for the database baseline."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .procs import LOAD_CPU, ToolRun, run_tool
from .report import percentile

WRK_SCRIPT = Path(__file__).resolve().parent / "requests.lua"
INSTALL_HINT = {"wrk": "apt-get install -y wrk", "h2load": "apt-get install -y nghttp2-client",
                "pgbench": "apt-get install -y postgresql-client (or postgresql-contrib)"}


class ToolMissing(RuntimeError):
    pass


def require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise ToolMissing(f"{tool} is not installed ({INSTALL_HINT.get(tool, 'install it')})")
    return found


@dataclass(frozen=True)
class WrkResult:
    counts: dict[str, float]
    run: ToolRun

    @property
    def seconds(self) -> float:
        return self.counts["duration_us"] / 1e6

    @property
    def ok_per_s(self) -> float:
        return self.counts["ok"] / self.seconds

    @property
    def errors(self) -> int:
        c = self.counts
        return int(c["other"] + c["connect_errors"] + c["read_errors"] + c["write_errors"] + c["timeouts"])


async def wrk(url: str, requests_file: Path, *, connections: int, duration_s: float, threads: int = 1,
              timeout_s: float = 10) -> WrkResult:
    """POSTs the lines of `requests_file` (see requests.lua) at `connections` connections."""
    argv = [require("wrk"), f"-t{threads}", f"-c{connections}", f"-d{duration_s:.0f}s", f"--timeout={timeout_s:.0f}s",
            "-s", str(WRK_SCRIPT), url, "--", str(requests_file), str(threads)]
    run = await run_tool(argv, LOAD_CPU, timeout_s=duration_s + 60)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{run.stdout[-2000:]}")
    return WrkResult(json.loads(line.removeprefix("BENCH ")), run)


@dataclass(frozen=True)
class H2Result:
    req_per_s: float
    succeeded: int
    failed: int
    status_2xx: int
    latencies_ms: list[float]
    run: ToolRun

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"h2load output lacks {pattern!r}:\n{text[-2000:]}")
    return float(found.group(1))


def _latencies_ms(log_file: Path) -> list[float]:
    """From h2load's per-request log: start (µs since epoch), status, duration (µs)."""
    lines = log_file.read_text().splitlines()
    return [int(line.split("\t")[2]) / 1000 for line in lines if line.count("\t") >= 2]


async def h2load(url: str, body: Path, headers: dict[str, str], *, clients: int, streams: int, duration_s: float,
                 warmup_s: float, log_file: Path) -> H2Result:
    """HTTP/2 POSTs of `body` with `streams` in flight on each of `clients` connections."""
    argv = [require("h2load"), f"-c{clients}", f"-m{streams}", "-t1", f"-D{duration_s:.0f}",
            f"--warm-up-time={warmup_s:.0f}", "-d", str(body), f"--log-file={log_file}"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    run = await run_tool([*argv, url], LOAD_CPU, timeout_s=duration_s + warmup_s + 60)
    out = run.stdout
    latencies = _latencies_ms(log_file)
    return H2Result(
        req_per_s=_number(r"finished in [\d.]+\w+, ([\d.]+) req/s", out),
        succeeded=int(_number(r"(\d+) succeeded", out)), failed=int(_number(r"(\d+) failed", out)),
        status_2xx=int(_number(r"status codes: (\d+) 2xx", out)), latencies_ms=latencies, run=run)


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    latency_ms: float
    transactions: int
    failed: int
    run: ToolRun


async def pgbench(database_url: str, script: Path, *, clients: int, jobs: int, duration_s: float) -> PgbenchResult:
    url = urlsplit(database_url)
    argv = [require("pgbench"), "-n", "-M", "prepared", f"-c{clients}", f"-j{jobs}", f"-T{duration_s:.0f}",
            "-f", str(script),
            "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres",
            url.path.lstrip("/")]
    run = await run_tool(argv, LOAD_CPU, timeout_s=duration_s + 60)
    out = run.stdout
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return PgbenchResult(
        tps=_number(r"tps = ([\d.]+) \(without initial connection time\)", out),
        latency_ms=_number(r"latency average = ([\d.]+) ms", out),
        transactions=int(_number(r"number of transactions actually processed: (\d+)", out)),
        failed=int(failed.group(1)) if failed else 0, run=run)
