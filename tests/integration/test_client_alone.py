"""The client needs only grpcio and protobuf: a Python that can import nothing else (no
site-packages, only the repository's `selfserve` package and the grpcio and protobuf packages,
with grpcio's own typing_extensions) imports it and checks a gate against the real service."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import google.protobuf
import grpc
import typing_extensions

from service_runtime.auth import Role
from tests.integration.conftest import Client
from tests.support.provider import subscription_event
from tests.support.tokens import TOKENS

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib.util, sys
sys.path.insert(0, {path!r})
for absent in ("asyncpg", "aiohttp", "stripe", "uvloop", "structlog", "prometheus_client", "entitlement_service",
               "service_runtime", "grpc_health", "grpc_status"):
    assert importlib.util.find_spec(absent) is None, absent + " must not be importable here"
from selfserve.client import BlockingEntitlementsClient
with BlockingEntitlementsClient({target!r}, {token!r}) as client:
    print(client.check("acct_1", "api_access"), client.check("acct_1", "no_such_gate"))
"""


def only_the_client(into: Path) -> Path:
    """A directory holding links to `selfserve`, grpc, protobuf and typing_extensions, nothing more."""
    (into / "google").mkdir()
    (into / "selfserve").symlink_to(ROOT / "selfserve")
    (into / "grpc").symlink_to(Path(grpc.__file__).parent)
    protobuf = Path(google.protobuf.__file__).parent
    (into / "google" / "protobuf").symlink_to(protobuf)
    if (protobuf.parent / "_upb").exists():
        (into / "google" / "_upb").symlink_to(protobuf.parent / "_upb")
    (into / "typing_extensions.py").symlink_to(Path(typing_extensions.__file__))
    return into


async def test_the_client_imports_and_checks_with_only_grpcio_and_protobuf(service: Client, tmp_path: Path) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    await service.apply(subscription_event("evt_1", "sub_1", start))
    script = SCRIPT.format(path=str(only_the_client(tmp_path)), target=f"127.0.0.1:{service.running.port}",
                           token=TOKENS[Role.PRODUCT])
    # -I: no environment, no user site, not the current directory; -S: no site-packages at all.
    process = await asyncio.create_subprocess_exec(sys.executable, "-I", "-S", "-c", script, cwd=tmp_path,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out.decode().split() == ["True", "False"]
