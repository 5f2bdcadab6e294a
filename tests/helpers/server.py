"""`deepautodnn serve` in a process of its own on a free loopback port, for the soak and load runs."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request


@contextlib.contextmanager
def running_server(model_dir, *serve_args: str, ready_timeout: float = 60.0):
    """Yield (process, port) once /readyz says 200; stop the server afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "deepautodnn", "serve", str(model_dir), "--port", str(port),
                               *serve_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not become ready: " + server.stderr.read().decode()[-2000:])
                time.sleep(0.1)
        yield server, port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
