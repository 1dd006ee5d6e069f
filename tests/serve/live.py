"""A real uvicorn server in a thread on a free loopback port, for the live-socket tests."""

import contextlib
import socket
import threading
import time

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, **config):
    """Serve `app` (uvicorn.Config options in `config`) until the block ends; yields
    (port, thread); the thread has been asked to stop and joined afterwards."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < end and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port, thread
    finally:
        srv.should_exit = True
        thread.join(timeout=20)
