"""Free loopback ports for processes that must be told their port in advance."""

import random
import socket

# A port handed out once is never handed out again in this run: it was only free when checked,
# and the process it was meant for may not have bound it yet when the next one is asked for.
_given: set[int] = set()


def free_port() -> int:
    """A free port below Linux's ephemeral range, so outgoing connections cannot take it first."""
    while True:
        port = random.randint(20_000, 32_000)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
