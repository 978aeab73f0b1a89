"""uvicorn settings for the portal, and a server in a background thread on a loopback port (tests,
demo, benchmark).

A public portal meets slow and greedy clients: the request head must arrive within HEAD_SECONDS
(HeadTimeoutH11), a head may not exceed MAX_HEAD_BYTES, and at most LIMIT_CONCURRENCY connections
are served at once (more get 503). The body's own deadline and size limit are the app's.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from orchestrator.errors import ConfigError

START_TIMEOUT_SECONDS = 10.0
HEAD_SECONDS = 10
MAX_HEAD_BYTES = 16 * 1024
LIMIT_CONCURRENCY = 200


class HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request head.

    uvicorn's keep-alive timer only runs between requests, and any byte stops it, so a client that
    opens a connection and sends its head a byte at a time holds it forever. Here the same timer
    also starts when the connection opens, and only a complete request head stops it.
    """

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        # Unlike the parent, no byte cancels the timer: handle_events does, on a whole request head.
        self.conn.receive_data(data)
        self.handle_events()


def server_config(app, host: str = "127.0.0.1", port: int = 0) -> uvicorn.Config:
    """The portal's uvicorn settings; no access log, since invite and admin links carry tokens."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # h11 even where httptools is installed: the head deadline is built on uvicorn's h11 protocol
        # (tests/test_portal_hardening.py checks it against the uvicorn installed).
        http=HeadTimeoutH11,
        timeout_keep_alive=HEAD_SECONDS,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        limit_concurrency=LIMIT_CONCURRENCY,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on `host:port`, or a ConfigError that says why not and what to do."""
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"--port {port} is not a TCP port", hint="give a port from 1 to 65535, e.g. --port 8080"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off only for sockets whose proto says TCP, and
    # with Nagle on, every keep-alive response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use",
                hint="stop what listens there, or pass another port with --port",
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="check --host and --port"
        ) from None
    return sock


class ServerThread:
    """uvicorn on `host:port` (port 0 picks a free one) in a daemon thread; use as a context manager."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket = bind(host, port)
        self.host, self.port = self.socket.getsockname()[:2]
        self.server = uvicorn.Server(server_config(app))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True, name="portal-server"
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the portal server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=START_TIMEOUT_SECONDS)
        self.socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
