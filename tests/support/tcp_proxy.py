"""A TCP relay in front of a server (PostgreSQL, a gRPC port) that fails the way a network path
does. It can go silent: a NAT or conntrack entry that expires, a failover to a new address, a
pooler that stops relaying; the connections it black-holes stay open and nothing more passes
through them, either way. It can also cut: every open connection is reset at once, as when a load
balancer or a node in between restarts, and new ones are refused until it is restored."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class _Relayed:
    def __init__(self) -> None:
        self.sent = bytearray()  # what the client sent, searched for the marker
        self.silent = False
        self.writers: list[asyncio.StreamWriter] = []  # both sides, to reset them on a cut


class TcpProxy:
    def __init__(self, url: str) -> None:
        target = urlsplit(url)
        self._url = url
        self._target = (target.hostname or "127.0.0.1", target.port or 5432)
        self._server: asyncio.Server | None = None
        self._connections: list[_Relayed] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._marker: bytes | None = None
        self._refusing = False

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        """The port the relay listens on, on 127.0.0.1."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The target's URL with the proxy in its place."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return urlsplit(self._url)._replace(netloc=f"{urlsplit(self._url).username}@127.0.0.1:{port}").geturl()

    def black_hole(self, marker: bytes) -> int:
        """Silences every connection whose client has sent `marker`, and every later one as soon as
        it sends it, until `restore`; returns how many open connections went silent now."""
        self._marker = marker
        silenced = [c for c in self._connections if marker in c.sent and not c.silent]
        for connection in silenced:
            connection.silent = True
        return len(silenced)

    @property
    def silenced(self) -> int:
        """How many connections went silent so far."""
        return sum(c.silent for c in self._connections)

    def cut(self) -> int:
        """Resets every open connection, both sides at once, and refuses new ones (each is reset as
        soon as it is accepted) until `restore`; returns how many open connections were reset."""
        self._refusing = True
        open_now = [c for c in self._connections if c.writers and not c.writers[0].is_closing()]
        for connection in open_now:
            for writer in connection.writers:
                writer.transport.abort()
        return len(open_now)

    def restore(self) -> None:
        """New connections relay again, after a black hole or a cut; the silenced ones stay silent, as on
        a real network."""
        self._marker = None
        self._refusing = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self._refusing:
            client_writer.transport.abort()
            self._tasks.discard(task)
            return
        connection = _Relayed()
        self._connections.append(connection)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return
        connection.writers = [client_writer, server_writer]
        try:
            await asyncio.gather(self._pump(client_reader, server_writer, connection, from_client=True),
                                 self._pump(server_reader, client_writer, connection, from_client=False))
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Relayed,
                    from_client: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if from_client:
                    connection.sent += data
                    if self._marker is not None and self._marker in connection.sent:
                        connection.silent = True
                if connection.silent:
                    continue  # swallowed: the peer is never told
                writer.write(data)
                await writer.drain()
        if not connection.silent:
            writer.close()  # one side closed: so does the other
