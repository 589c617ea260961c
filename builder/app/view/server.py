"""Serve the viewer: bind first (so `--port 0` can name the port it got), print the URL, run until Ctrl-C.

Binding happens here rather than in uvicorn so a taken port or a bad host is one line and exit status 2, and
the printed URL is the one that answers."""

import socket

import uvicorn

from builder.app.view.app import create_app
from builder.core.errors import BuilderError
from builder.core.store import Store


def listening_socket(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        raise BuilderError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(store: Store, host: str, port: int, announce) -> None:
    """Blocks until Ctrl-C (or SIGTERM), which uvicorn turns into a graceful shutdown."""
    if not store.root.is_dir():
        raise BuilderError(f"no store at {store.root}")
    sock = listening_socket(host, port)
    announce(url_of(sock))
    config = uvicorn.Config(create_app(store), log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, once it has shut down
        pass
    finally:
        sock.close()
