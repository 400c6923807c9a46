"""A TCP relay in front of PostgreSQL that can go silent the way a network path does: a NAT or
conntrack entry that expires, a failover to a new address, a pooler that stops relaying. The
connections it black-holes stay open and nothing more passes through them, either way."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class _Relayed:
    def __init__(self) -> None:
        self.sent = bytearray()  # what the client sent, searched for the marker
        self.silent = False


class TcpProxy:
    def __init__(self, url: str) -> None:
        target = urlsplit(url)
        self._url = url
        self._target = (target.hostname or "127.0.0.1", target.port or 5432)
        self._server: asyncio.Server | None = None
        self._connections: list[_Relayed] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._marker: bytes | None = None

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

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

    def restore(self) -> None:
        """New connections relay again; the silenced ones stay silent, as on a real network."""
        self._marker = None

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
        connection = _Relayed()
        self._connections.append(connection)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return
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
