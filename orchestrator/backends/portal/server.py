"""Serve an ASGI app with uvicorn in a background thread on a loopback port (tests, demo, benchmark)."""

from __future__ import annotations

import errno
import socket
import threading
import time

import uvicorn

from orchestrator.errors import ConfigError

START_TIMEOUT_SECONDS = 10.0


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
        # No access log: invite and admin links carry tokens in their paths.
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
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
