"""`make run` as a newcomer drives it: the stack comes up, the printed grpcurl lines work when
pasted, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.tokens import SERVICE_TOKENS
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]




def processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


async def test_the_run_command_prints_working_grpcurl_lines_and_ctrl_c_stops_everything(database_url: str) -> None:
    grpc_addr = f"127.0.0.1:{free_port()}"
    marker = f"ENTITLEMENT_GRPC_ADDR={grpc_addr}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SERVICE_TOKENS": SERVICE_TOKENS,
        "STRIPE_WEBHOOK_SECRETS": "whsec_local_stack_test",
        "ENTITLEMENT_GRPC_ADDR": grpc_addr,
        "ENTITLEMENT_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "CHECKOUT_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "CHECKOUT_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }
    stack = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert stack.stdout is not None
    printed: list[str] = []
    try:
        async def banner_complete() -> bool:
            line = (await stack.stdout.readline()).decode()  # type: ignore[union-attr]
            if not line:
                raise AssertionError("the stack exited early:\n" + "".join(printed))
            printed.append(line)
            return "describe selfserve.checkout.v1.CheckoutService" in line

        await eventually(banner_complete, timeout_s=60, what="the stack's banner")
        text = "".join(printed)
        assert "The stack is up" in text and grpc_addr in text
        assert all(role in text for role in ("product", "checkout", "support", "operator"))
        pasted = [line.strip() for line in printed if "grpcurl" in line]
        assert len(pasted) == 3
        for command in pasted:
            proc = await asyncio.create_subprocess_exec(*shlex.split(command), stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, f"{command}\n{out.decode()}"
        assert len(processes_with(marker)) >= 3  # the stack itself and both services

        stack.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(stack.wait(), 40) == 0
        assert processes_with(marker) == []
    finally:
        if stack.returncode is None:
            stack.kill()
            await stack.wait()
