"""TLS and mutual TLS on both gRPC ports and on the checkout service's channel to the entitlement
service, configured from the environment as a deployment would, with certificates made for this
run (tests/support/pki.py): real services, real sockets, the real grpcurl binary."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from checkout_service.catalog_apply import apply
from checkout_service.cli import read_catalog
from checkout_service.entitlement_client import is_serving
from checkout_service.settings import Settings as CheckoutSettings
from entitlement_service.app import start
from entitlement_service.settings import Settings
from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from service_runtime.config import ConfigError
from tests.integration.conftest import Client, Stack, start_checkout, stop_service
from tests.support.fake_provider import FakeProvider
from tests.support.pki import KeyPair, Pki, channel_env, encrypted_copy, make_pki, secure_channel, server_env
from tests.support.provider import EXAMPLE_CATALOG
from tests.support.tokens import SERVICE_TOKENS, TOKENS, bearer
from tests.support.waiting import eventually

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
ENTITLEMENT = "selfserve.entitlement.v1.EntitlementService"
CHECKOUT = "selfserve.checkout.v1.CheckoutService"
SERVING = health_pb2.HealthCheckResponse.SERVING
CHECKOUT_ENV = {"SERVICE_TOKENS": SERVICE_TOKENS, "STRIPE_API_KEY": "sk_test_fake",
                "STRIPE_WEBHOOK_SECRETS": "whsec_tls_tests"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def start_tls_service(database_url: str, pki: Pki, *, mutual: bool = True) -> Client:
    """The entitlement service with TLS on its gRPC port, and a client channel with the CA's client
    certificate."""
    settings = Settings.from_env({"DATABASE_URL": database_url, "SERVICE_TOKENS": SERVICE_TOKENS,
                                  "ENTITLEMENT_GRPC_ADDR": "127.0.0.1:0", "ENTITLEMENT_METRICS_ADDR": "127.0.0.1:0",
                                  **server_env(pki, mutual=mutual)})
    running = await start(settings)
    channel = secure_channel(f"127.0.0.1:{running.port}", pki.ca, pki.client)
    client = Client(running, channel)
    try:
        await eventually(lambda: is_serving(channel), what="the entitlement service to serve over TLS")
    except BaseException:
        await stop_service(client)
        raise
    return client


@pytest.fixture
async def mutual_service(database_url: str, pki: Pki) -> AsyncIterator[Client]:
    client = await start_tls_service(database_url, pki)
    try:
        yield client
    finally:
        await stop_service(client)


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def health_of(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def listed_services(channel: grpc.aio.Channel) -> set[str]:
    listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    reply = await listing.read()
    return {s.name for s in reply.list_services_response.service}


async def test_a_tls_entitlement_service_answers_a_tls_client_with_health_reflection_and_calls(
    database_url: str, pki: Pki
) -> None:
    client = await start_tls_service(database_url, pki, mutual=False)
    try:
        async with secure_channel(f"127.0.0.1:{client.running.port}", pki.ca) as channel:  # no client certificate
            assert await health_of(channel) == SERVING
            assert await health_of(channel, ENTITLEMENT) == SERVING
            assert await listed_services(channel) >= {ENTITLEMENT, "grpc.health.v1.Health"}
            await Client(client.running, channel).product.ListCatalog(pb.ListCatalogRequest(), timeout=5)
    finally:
        await stop_service(client)


async def test_mutual_tls_lets_in_only_a_client_certificate_its_ca_signed(mutual_service: Client, pki: Pki) -> None:
    target = f"127.0.0.1:{mutual_service.running.port}"
    async with secure_channel(target, pki.ca) as anonymous, \
            secure_channel(target, pki.ca, pki.rogue_client) as rogue:
        for channel in (anonymous, rogue):
            assert await code_of(health_of(channel)) == grpc.StatusCode.UNAVAILABLE
            stub = Client(mutual_service.running, channel).product
            assert await code_of(stub.ListCatalog(pb.ListCatalogRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    assert await health_of(mutual_service.channel) == SERVING
    assert await listed_services(mutual_service.channel) >= {ENTITLEMENT}
    await mutual_service.product.ListCatalog(pb.ListCatalogRequest(), timeout=5)


async def test_a_plaintext_client_or_one_that_does_not_trust_the_ca_cannot_talk_to_a_tls_server(
    mutual_service: Client, pki: Pki
) -> None:
    target = f"127.0.0.1:{mutual_service.running.port}"
    async with grpc.aio.insecure_channel(target) as plaintext, \
            secure_channel(target, pki.rogue_ca, pki.client) as distrustful:
        for channel in (plaintext, distrustful):
            assert await code_of(health_of(channel)) == grpc.StatusCode.UNAVAILABLE


async def test_the_checkout_service_reaches_a_mutual_tls_entitlement_service_end_to_end(
    mutual_service: Client, pki: Pki
) -> None:
    provider = FakeProvider()
    await apply(read_catalog(EXAMPLE_CATALOG), provider, mutual_service.operator)  # type: ignore[arg-type]
    checkout = await start_checkout(mutual_service, provider, env=channel_env(pki.ca, pki.client))
    try:
        async with aiohttp.ClientSession() as http:
            stack = Stack(mutual_service, checkout, provider, http)
            async with http.get(stack.url("/readyz")) as r:
                assert r.status == 200 and (await r.json())["checks"] == {"entitlement_service": True}
            body = {"account_id": "acct_tls", "items": [{"price": "pro_monthly", "quantity": 1}],
                    "success_url": "https://app.example/done", "cancel_url": "https://app.example/pricing"}
            status, created = await stack.post("/v1/checkout/sessions", body)
            assert status == 201, created
    finally:
        await checkout.stop(0)
    reply = await mutual_service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id=created["purchase_id"]))
    assert reply.purchase.account_id == "acct_tls"


@pytest.mark.parametrize(("presents", "server_name", "reaches"), [
    pytest.param(False, None, False, id="without a client certificate"),
    pytest.param(True, "localhost", True, id="server name in the certificate"),
    pytest.param(True, "elsewhere.example", False, id="server name not in the certificate"),
])
async def test_the_checkout_channel_presents_its_certificate_and_checks_the_server_name(
    mutual_service: Client, pki: Pki, presents: bool, server_name: str | None, reaches: bool
) -> None:
    tls_env = channel_env(pki.ca, pki.client if presents else None, server_name)
    checkout = await start_checkout(mutual_service, FakeProvider(), env=tls_env)
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{checkout.http_port}/readyz") as r:
            assert (r.status == 200) is reaches
            assert (await r.json())["checks"] == {"entitlement_service": reaches}
    finally:
        await checkout.stop(0)


async def test_the_checkout_services_own_grpc_port_serves_mutual_tls(mutual_service: Client, pki: Pki) -> None:
    provider = FakeProvider()
    await apply(read_catalog(EXAMPLE_CATALOG), provider, mutual_service.operator)  # type: ignore[arg-type]
    env = {**server_env(pki), **channel_env(pki.ca, pki.client)}
    checkout = await start_checkout(mutual_service, provider, env=env)
    try:
        target = f"127.0.0.1:{checkout.port}"
        async with secure_channel(target, pki.ca, pki.client) as channel, \
                grpc.aio.insecure_channel(target) as plaintext, secure_channel(target, pki.ca) as anonymous:
            assert await health_of(channel, CHECKOUT) == SERVING
            assert await listed_services(channel) >= {CHECKOUT, "grpc.health.v1.Health"}
            # over mutual TLS twice: to the checkout service, and from it to the entitlement service
            reply = await checkout_pb2_grpc.CheckoutServiceStub(channel).ListCatalog(
                checkout_pb2.ListCatalogRequest(), metadata=bearer(Role.PRODUCT), timeout=5)
            assert {p.price.lookup_key for p in reply.catalog.prices} >= {"pro_monthly"}
            for refused in (plaintext, anonymous):
                assert await code_of(health_of(refused)) == grpc.StatusCode.UNAVAILABLE
    finally:
        await checkout.stop(0)


async def grpcurl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(GRPCURL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


async def test_grpcurl_with_the_client_certificate_lists_and_calls_and_without_it_is_refused(
    mutual_service: Client, pki: Pki
) -> None:
    target = f"127.0.0.1:{mutual_service.running.port}"
    tls = ("-cacert", str(pki.ca), "-cert", str(pki.client.cert), "-key", str(pki.client.key))
    code, listed = await grpcurl(*tls, target, "list")
    assert code == 0, listed
    assert set(listed.split()) >= {ENTITLEMENT, "grpc.health.v1.Health"}
    code, answered = await grpcurl(*tls, "-H", f"authorization: Bearer {TOKENS[Role.SUPPORT]}",
                                   "-d", json.dumps({"account_id": "acct_1"}), target, f"{ENTITLEMENT}/GetEntitlements")
    assert code == 0, answered
    for without in (("-cacert", str(pki.ca)), ("-plaintext",),
                    ("-cacert", str(pki.ca), "-cert", str(pki.rogue_client.cert), "-key", str(pki.rogue_client.key))):
        code, refused = await grpcurl(*without, "-connect-timeout", "2", target, "list")
        assert code != 0 and "Failed to dial target host" in refused, refused


# Configuration: every mistake stops start-up naming its variables, and no message or repr shows
# what a key file holds.

def key_material(pki: Pki) -> list[str]:
    return [line for key in (pki.server.key, pki.client.key, pki.rogue_client.key)
            for line in key.read_text().splitlines() if line and not line.startswith("-----")]


NOT_PEM = ("not a certificate\n", "not a key\n",
           "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


SERVER_MISTAKES: list[tuple[str, Callable[[Pki, Path], dict[str, str]], tuple[str, ...]]] = [
    ("cert without key", lambda p, _: {"GRPC_TLS_CERT_FILE": str(p.server.cert)},
     ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE")),
    ("key without cert", lambda p, _: {"GRPC_TLS_KEY_FILE": str(p.server.key)},
     ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE")),
    ("client CA without cert", lambda p, _: {"GRPC_TLS_CLIENT_CA_FILE": str(p.ca)}, ("GRPC_TLS_CLIENT_CA_FILE",)),
    ("unreadable cert", lambda p, t: {**server_env(p), "GRPC_TLS_CERT_FILE": str(t / "missing.pem")},
     ("GRPC_TLS_CERT_FILE",)),
    ("key is a directory", lambda p, t: {**server_env(p), "GRPC_TLS_KEY_FILE": str(t)}, ("GRPC_TLS_KEY_FILE",)),
    ("cert not PEM", lambda p, t: {**server_env(p), "GRPC_TLS_CERT_FILE": write(t / "c.pem", NOT_PEM[0])},
     ("GRPC_TLS_CERT_FILE",)),
    ("key not PEM", lambda p, t: {**server_env(p), "GRPC_TLS_KEY_FILE": write(t / "k.pem", NOT_PEM[1])},
     ("GRPC_TLS_KEY_FILE",)),
    ("client CA not base64", lambda p, t: {**server_env(p), "GRPC_TLS_CLIENT_CA_FILE": write(t / "ca.pem", NOT_PEM[2])},
     ("GRPC_TLS_CLIENT_CA_FILE",)),
    ("key file holds a certificate", lambda p, _: {**server_env(p), "GRPC_TLS_KEY_FILE": str(p.server.cert)},
     ("GRPC_TLS_KEY_FILE",)),
    ("cert file holds a key", lambda p, _: {**server_env(p), "GRPC_TLS_CERT_FILE": str(p.server.key)},
     ("GRPC_TLS_CERT_FILE",)),
    ("key of another certificate", lambda p, _: {**server_env(p), "GRPC_TLS_KEY_FILE": str(p.client.key)},
     ("GRPC_TLS_KEY_FILE", "GRPC_TLS_CERT_FILE")),
    ("encrypted key", lambda p, t: {**server_env(p), "GRPC_TLS_KEY_FILE": str(encrypted_copy(p.server.key,
                                                                                             t / "enc.key"))},
     ("GRPC_TLS_KEY_FILE",)),
]

CHANNEL_MISTAKES: list[tuple[str, Callable[[Pki, Path], dict[str, str]], tuple[str, ...]]] = [
    ("client cert without key", lambda p, _: {"ENTITLEMENT_TLS_CA_FILE": str(p.ca),
                                              "ENTITLEMENT_TLS_CERT_FILE": str(p.client.cert)},
     ("ENTITLEMENT_TLS_CERT_FILE", "ENTITLEMENT_TLS_KEY_FILE")),
    ("client certificate without CA", lambda p, _: {"ENTITLEMENT_TLS_CERT_FILE": str(p.client.cert),
                                                    "ENTITLEMENT_TLS_KEY_FILE": str(p.client.key)},
     ("ENTITLEMENT_TLS_CA_FILE",)),
    ("server name without CA", lambda p, _: {"ENTITLEMENT_TLS_SERVER_NAME": "localhost"},
     ("ENTITLEMENT_TLS_SERVER_NAME", "ENTITLEMENT_TLS_CA_FILE")),
    ("unreadable CA", lambda p, t: channel_env(t / "missing.pem"), ("ENTITLEMENT_TLS_CA_FILE",)),
    ("CA not PEM", lambda p, t: channel_env(Path(write(t / "ca.pem", NOT_PEM[0]))),
     ("ENTITLEMENT_TLS_CA_FILE",)),
    ("CA file holds a key", lambda p, _: channel_env(p.client.key), ("ENTITLEMENT_TLS_CA_FILE",)),
    ("client key of another certificate", lambda p, _: channel_env(p.ca, KeyPair(p.client.cert, p.server.key)),
     ("ENTITLEMENT_TLS_KEY_FILE",)),
]


def assert_refused_naming(settings: type[Settings] | type[CheckoutSettings], env: dict[str, str],
                          named: tuple[str, ...], pki: Pki) -> None:
    """Start-up refuses `env` naming every variable in `named`, and shows nothing a file holds."""
    with pytest.raises(ConfigError) as refused:
        settings.from_env(env)
    message = str(refused.value)
    assert all(name in message for name in named), message
    assert not any(line in message for line in key_material(pki)), message
    assert not any(text.strip() in message for text in NOT_PEM) and "BEGIN" not in message


@pytest.mark.parametrize("settings", [Settings, CheckoutSettings], ids=["entitlement", "checkout"])
@pytest.mark.parametrize(("mistake", "named"), [pytest.param(m, n, id=i) for i, m, n in SERVER_MISTAKES])
def test_a_server_tls_mistake_is_refused_naming_its_variables_and_showing_no_key(
    settings: type[Settings] | type[CheckoutSettings], mistake: Callable[[Pki, Path], dict[str, str]],
    named: tuple[str, ...], pki: Pki, tmp_path: Path
) -> None:
    assert_refused_naming(settings, {**CHECKOUT_ENV, **mistake(pki, tmp_path)}, named, pki)


@pytest.mark.parametrize(("mistake", "named"), [pytest.param(m, n, id=i) for i, m, n in CHANNEL_MISTAKES])
def test_a_channel_tls_mistake_is_refused_naming_its_variables_and_showing_no_key(
    mistake: Callable[[Pki, Path], dict[str, str]], named: tuple[str, ...], pki: Pki, tmp_path: Path
) -> None:
    assert_refused_naming(CheckoutSettings, {**CHECKOUT_ENV, **mistake(pki, tmp_path)}, named, pki)


def test_without_tls_variables_both_services_stay_plaintext() -> None:
    assert Settings.from_env(CHECKOUT_ENV).tls is None
    checkout = CheckoutSettings.from_env(CHECKOUT_ENV)
    assert checkout.tls is None and checkout.entitlement_tls is None


def test_the_settings_repr_shows_the_file_paths_and_no_key(pki: Pki) -> None:
    entitlement = Settings.from_env({**CHECKOUT_ENV, **server_env(pki)})
    checkout = CheckoutSettings.from_env({**CHECKOUT_ENV, **server_env(pki), **channel_env(pki.ca, pki.client)})
    assert entitlement.tls is not None and entitlement.tls.mutual
    assert checkout.entitlement_tls is not None and checkout.entitlement_tls.mutual
    for shown in (repr(entitlement), str(entitlement), repr(checkout), str(checkout)):
        assert str(pki.server.key) in shown and str(pki.ca) in shown
        assert not any(line in shown for line in key_material(pki)), shown
        assert "BEGIN" not in shown
    assert str(pki.client.key) in repr(checkout)
