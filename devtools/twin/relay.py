"""A TCP relay on the twin's bridge, so tasks reach a service that listens on loopback only.

Tasks have their own network namespaces: ``127.0.0.1`` there is the task itself. When the local
stack is given an existing Redis (``--broker-url redis://127.0.0.1:6379/0``), the twin resolves
the broker URL secret to this relay's address on the bridge instead, and the relay forwards
each connection to the Redis the URL names.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from devtools.twin.awsvpc import HOST_ADDRESS


class Relay:
    """Forwards every connection to ``HOST_ADDRESS:<port>`` to ``target``, until ``close``."""

    def __init__(self, target: tuple[str, int], url: str) -> None:
        self.target = target
        self._url = url
        self._listener = socket.create_server((HOST_ADDRESS, 0))
        self.port = int(self._listener.getsockname()[1])
        self._closing = threading.Event()
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    @staticmethod
    @contextlib.contextmanager
    def to_url(url: str) -> Iterator[Relay]:
        parts = urlsplit(url)
        relay = Relay((parts.hostname or "127.0.0.1", parts.port or 6379), url)
        try:
            yield relay
        finally:
            relay.close()

    @property
    def url_for_tasks(self) -> str:
        """``url`` with its host and port replaced by the relay's."""
        parts = urlsplit(self._url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{HOST_ADDRESS}:{self.port}"))

    def close(self) -> None:
        self._closing.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()  # the task sees a refused broker, as it would without the relay
                continue
            upstream.settimeout(None)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.ExitStack() as closing:
        closing.callback(sink.close)
        closing.callback(source.close)
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                sink.sendall(data)
            except OSError:
                return
