"""Certificates for TLS tests, made with the `openssl` command at test time: a CA, a server
certificate for 127.0.0.1 and localhost, a client certificate, and a rogue CA with a client
certificate of its own that the first CA never signed. Also the environment that hands them to
the services, and a client channel that uses them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc

from service_runtime.config import Env
from service_runtime.tls import ChannelTls

DAYS = "2"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: KeyPair
    client: KeyPair
    rogue_ca: Path
    rogue_client: KeyPair


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return path


def make_ca(directory: Path, name: str) -> KeyPair:
    key = _key(directory / f"{name}.key")
    cert = directory / f"{name}.pem"
    _openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={name}", "-days", DAYS, "-out", cert,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return KeyPair(cert, key)


def issue(directory: Path, ca: KeyPair, name: str, extensions: str) -> KeyPair:
    """A certificate for `name` signed by `ca`, with the given X.509v3 extensions (config lines)."""
    key = _key(directory / f"{name}.key")
    request, cert, ext = directory / f"{name}.csr", directory / f"{name}.pem", directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", request)
    _openssl("x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
             "-CAserial", directory / f"{ca.cert.stem}.srl", "-days", DAYS, "-extfile", ext, "-out", cert)
    return KeyPair(cert, key)


def make_pki(directory: Path) -> Pki:
    ca = make_ca(directory, "ca")
    server = issue(directory, ca, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                            "extendedKeyUsage=serverAuth\n")
    client = issue(directory, ca, "client", "extendedKeyUsage=clientAuth\n")
    rogue_ca = make_ca(directory, "rogue-ca")
    rogue_client = issue(directory, rogue_ca, "rogue-client", "extendedKeyUsage=clientAuth\n")
    return Pki(ca.cert, server, client, rogue_ca.cert, rogue_client)


def encrypted_copy(key: Path, out: Path) -> Path:
    """`key` encrypted under a passphrase (PKCS#8), as gRPC cannot use it."""
    _openssl("pkcs8", "-topk8", "-in", key, "-passout", "pass:a passphrase", "-out", out)
    return out


def server_env(pki: Pki, *, mutual: bool = True) -> dict[str, str]:
    """TLS on a service's gRPC port with the server certificate; mutual: clients need one the CA signed."""
    env = {"GRPC_TLS_CERT_FILE": str(pki.server.cert), "GRPC_TLS_KEY_FILE": str(pki.server.key)}
    return {**env, "GRPC_TLS_CLIENT_CA_FILE": str(pki.ca)} if mutual else env


def channel_env(ca: Path, client: KeyPair | None = None, server_name: str | None = None) -> dict[str, str]:
    """TLS on the checkout service's channel: trusting `ca`, presenting `client` when given."""
    env = {"ENTITLEMENT_TLS_CA_FILE": str(ca)}
    if client is not None:
        env |= {"ENTITLEMENT_TLS_CERT_FILE": str(client.cert), "ENTITLEMENT_TLS_KEY_FILE": str(client.key)}
    if server_name is not None:
        env["ENTITLEMENT_TLS_SERVER_NAME"] = server_name
    return env


def secure_channel(target: str, ca: Path, client: KeyPair | None = None) -> grpc.aio.Channel:
    """A TLS channel that trusts `ca` and, given `client`, presents that certificate."""
    tls = ChannelTls.from_env(Env(channel_env(ca, client)), "ENTITLEMENT_TLS")
    assert tls is not None
    return grpc.aio.secure_channel(target, tls.credentials(), tls.options())
