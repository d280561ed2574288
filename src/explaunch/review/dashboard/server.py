"""Serving the dashboard with uvicorn: in the foreground (``explaunch dashboard``) or in a thread of the sweep parent
(``hydra.sweeper.dashboard=true``).

The socket is bound here, before uvicorn starts, so that port 0 gives a free port whose number is known and a port
in use is one clear error rather than a log line from a server thread.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int | None, port_key: str = "--port") -> socket.socket:
    """A listening socket on ``host:port`` (``port`` None or 0: a free one)."""
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(port_key, port, "must be a port number from 1 to 65535 (leave it out for a free port)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port or 0))
    except OSError as ex:
        sock.close()
        if isinstance(ex, socket.gaierror) or ex.errno == errno.EADDRNOTAVAIL:
            raise ConfigError("--host", host, "not an address of this machine (default 127.0.0.1)") from None
        raise ConfigError(
            port_key, port, f"cannot listen on {host}: {ex.strerror}; leave it out for a free port"
        ) from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def new_token() -> str:
    """The dashboard's token: 192 random bits, new at every start."""
    import secrets

    return secrets.token_urlsafe(24)


def url_of(sock: socket.socket, token: str | None = None) -> str:
    """The address to open: with ``?token=`` (as Jupyter prints it) when the dashboard has one."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def dashboard_command(root: Path, port: int | None = None) -> str:
    """What a user runs to serve ``root``'s dashboard where its token is printed to them (a sweep whose output goes
    to a file does not serve its own)."""
    import shlex

    return shlex.join(["explaunch", "dashboard", str(root), *(["--port", str(port)] if port else [])])


def allowed_hosts(host: str) -> list[str] | None:
    """Host headers the app accepts: loopback names by default; any where the user bound a wildcard address."""
    if is_loopback(host):
        return None
    if host in ("0.0.0.0", "::"):
        return ["*"]
    return [host, "127.0.0.1", "localhost"]


def make_server(root: Path, sock: socket.socket, host: str, token: str) -> Any:
    import uvicorn

    from explaunch.review.dashboard.app import create_app

    config = uvicorn.Config(
        create_app(root, allowed_hosts(host), token),
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


def serve(root: Path, host: str = LOOPBACK, port: int | None = None, on_ready: Any = None) -> None:
    """Serve ``root`` until interrupted (Ctrl-C, SIGTERM)."""
    sock, token = bind_socket(host, port), new_token()
    server = make_server(root, sock, host, token)
    if on_ready is not None:
        on_ready(url_of(sock, token))
    server.run(sockets=[sock])


@dataclass
class RunningDashboard:
    url: str  # with its token: print it to the user, never to a log or a record
    server: Any
    thread: threading.Thread
    token: str
    port: int

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def start_in_thread(
    root: Path, port: int | None = None, port_key: str = "--port", host: str = LOOPBACK
) -> RunningDashboard:
    """Serve ``root`` from a daemon thread (uvicorn installs no signal handlers outside the main thread)."""
    sock, token = bind_socket(host, port, port_key), new_token()
    server = make_server(root, sock, host, token)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="explaunch-dashboard", daemon=True)
    thread.start()
    return RunningDashboard(url_of(sock, token), server, thread, token, int(sock.getsockname()[1]))
