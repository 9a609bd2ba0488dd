"""Fixtures for fault tests: backing services that are not there, or that hang."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.test import override_settings

from apps.common import store_health
from apps.training import index
from bench.host import free_port

PORTS = range(8100, 8200)  # the loopback ports these tests may use


def closed_port() -> int:
    """A loopback port of ``PORTS`` that nothing listens on: connecting is refused at once."""
    return free_port(PORTS)


class HungServer:
    """A TCP server that accepts connections and never answers: a Qdrant that hangs (overloaded, or
    half-dead behind a load balancer). Counts the connections it accepted."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", closed_port()))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            self._held.append(conn)  # kept open, never read from or written to

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


@contextmanager
def vector_store_at(url: str) -> Iterator[str]:
    """The process's vector store is the Qdrant server at ``url`` while inside; the embedded one after.
    What the pages remember of the store's health is forgotten both ways: ``closed_port`` hands out the
    same port again, to a server that may answer differently."""
    index.vector_store_close()
    store_health.forget()
    try:
        with override_settings(QDRANT_URL=url):
            yield url
    finally:
        index.vector_store_close()
        store_health.forget()


@pytest.fixture
def store_down() -> Iterator[str]:
    """The vector store pointed at a Qdrant server that is not there (a closed loopback port)."""
    with vector_store_at(f"http://127.0.0.1:{closed_port()}") as url:
        yield url


@pytest.fixture
def store_hung() -> Iterator[HungServer]:
    """The vector store pointed at a Qdrant server that accepts connections and never answers."""
    server = HungServer()
    try:
        with vector_store_at(f"http://127.0.0.1:{server.port}"):
            yield server
    finally:
        server.close()
