"""Free loopback ports for processes that must be told their port in advance."""

import random
import socket


def free_port() -> int:
    """A free port below Linux's ephemeral range, so outgoing connections cannot take it first."""
    while True:
        port = random.randint(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
