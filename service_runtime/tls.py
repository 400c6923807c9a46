"""TLS for a gRPC server's port and for a gRPC channel, read from PEM files named by environment
variables once at start-up. Unset, both stay plaintext.

A server's port: `GRPC_TLS_CERT_FILE` and `GRPC_TLS_KEY_FILE` (both or neither) turn TLS on;
`GRPC_TLS_CLIENT_CA_FILE` makes it mutual: a client must present a certificate that CA signed, or
its handshake fails. A channel, under a prefix such as `ENTITLEMENT_TLS`: `<prefix>_CA_FILE` (the CA
that signed the server's certificate) turns TLS on; `<prefix>_CERT_FILE` and `<prefix>_KEY_FILE`
(both or neither) are the client certificate for mutual TLS; `<prefix>_SERVER_NAME` replaces the
target's host as the name checked against the server's certificate.

A file that cannot be read, is not PEM or holds nothing of the right kind, and a key that is not
its certificate's, stop start-up with an error naming the variable; no error and no repr ever shows
what a file holds."""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from dataclasses import dataclass, field

import grpc

from service_runtime.config import ConfigError, Env

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and private key, and with `client_ca` mutual TLS. The repr
    shows the files' paths only."""

    cert_file: str
    key_file: str
    client_ca_file: str | None
    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = field(repr=False)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    @classmethod
    def from_env(cls, env: Env) -> ServerTls | None:
        pair = _pair(env, "GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE")
        client_ca_file = env.optional("GRPC_TLS_CLIENT_CA_FILE")
        if pair is None:
            if client_ca_file is not None:
                raise ConfigError("GRPC_TLS_CLIENT_CA_FILE needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE: mutual TLS "
                                  "is TLS whose clients present certificates too")
            return None
        cert_file, key_file = pair
        chain, private_key = read_key_pair("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", cert_file, key_file)
        client_ca = None if client_ca_file is None else read_certificates("GRPC_TLS_CLIENT_CA_FILE", client_ca_file)
        return cls(cert_file, key_file, client_ca_file, chain, private_key, client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.private_key, self.certificate_chain)],
                                           root_certificates=self.client_ca, require_client_auth=self.mutual)


@dataclass(frozen=True)
class ChannelTls:
    """The CA a channel trusts for the server's certificate, the client certificate and key it
    presents for mutual TLS, and the name checked against the server's certificate when it is not
    the target's host. The repr shows the files' paths only."""

    ca_file: str
    cert_file: str | None
    key_file: str | None
    server_name: str | None
    root_certificates: bytes = field(repr=False)
    certificate_chain: bytes | None = field(repr=False)
    private_key: bytes | None = field(repr=False)

    @property
    def mutual(self) -> bool:
        return self.certificate_chain is not None

    @classmethod
    def from_env(cls, env: Env, prefix: str) -> ChannelTls | None:
        ca, cert, key, server_name = (f"{prefix}_CA_FILE", f"{prefix}_CERT_FILE", f"{prefix}_KEY_FILE",
                                      f"{prefix}_SERVER_NAME")
        ca_file = env.optional(ca)
        pair = _pair(env, cert, key)
        if ca_file is None:
            if pair is not None:
                raise ConfigError(f"{cert} and {key} need {ca}: a client certificate is presented over TLS only")
            if env.optional(server_name) is not None:
                raise ConfigError(f"{server_name} needs {ca}: the name is checked against the server's certificate, "
                                  "which only TLS asks for")
            return None
        root_certificates = read_certificates(ca, ca_file)
        if pair is None:
            return cls(ca_file, None, None, env.optional(server_name), root_certificates, None, None)
        chain, private_key = read_key_pair(cert, key, *pair)
        return cls(ca_file, *pair, env.optional(server_name), root_certificates, chain, private_key)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates, private_key=self.private_key,
                                            certificate_chain=self.certificate_chain)

    def options(self) -> list[tuple[str, str]]:
        return [] if self.server_name is None else [("grpc.ssl_target_name_override", self.server_name)]


def _pair(env: Env, cert: str, key: str) -> tuple[str, str] | None:
    """A certificate file and its key file, both set or neither."""
    cert_file, key_file = env.optional(cert), env.optional(key)
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        missing = cert if cert_file is None else key
        raise ConfigError(f"{cert} and {key} are set together or not at all; {missing} is not set")
    return cert_file, key_file


def read_key_pair(cert: str, key: str, cert_file: str, key_file: str) -> tuple[bytes, bytes]:
    """The certificate chain and the private key, checked by OpenSSL to belong together."""
    chain, private_key = read_certificates(cert, cert_file), read_private_key(key, key_file)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"{key} must hold the private key of the certificate in {cert}; OpenSSL refuses "
                          f"{key_file} with {cert_file}: {exc.reason or 'unreadable'}") from None
    return chain, private_key


def read_certificates(name: str, path: str) -> bytes:
    """The PEM file at `path`, which must hold at least one certificate OpenSSL can read."""
    data = _read(name, path)
    certificates = [block for label, block in _pem_blocks(name, path, data) if label == "CERTIFICATE"]
    if not certificates:
        raise ConfigError(f"{name} must name a PEM file holding a certificate; {path} holds none")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=b"\n".join(certificates).decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError):
        raise ConfigError(f"{name}: {path} holds a certificate OpenSSL cannot read") from None
    return data


def read_private_key(name: str, path: str) -> bytes:
    """The PEM file at `path`, which must hold an unencrypted private key."""
    data = _read(name, path)
    keys = [(label, block) for label, block in _pem_blocks(name, path, data) if label.endswith("PRIVATE KEY")]
    if not keys:
        raise ConfigError(f"{name} must name a PEM file holding a private key; {path} holds none")
    if any(label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block for label, block in keys):
        raise ConfigError(f"{name}: the private key in {path} is encrypted; gRPC needs it unencrypted")
    return data


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def _pem_blocks(name: str, path: str, data: bytes) -> list[tuple[str, bytes]]:
    """The label (`CERTIFICATE`, `PRIVATE KEY`, ...) and the whole text of each PEM block in
    `data`, none for a file that is not PEM. A block whose body is not base64 (header lines such as
    `Proc-Type:` aside) is refused."""
    blocks = []
    for block in _PEM_BLOCK.finditer(data):
        body = block.group(2)
        encoded = b"".join(line.strip() for line in body.splitlines() if b":" not in line)
        try:
            base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ConfigError(f"{name} must name a PEM file; a block in {path} is not base64") from None
        blocks.append((block.group(1).decode("ascii"), block.group(0)))
    return blocks
