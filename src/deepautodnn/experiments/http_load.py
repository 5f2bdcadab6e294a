"""`deepautodnn serve` in a process of its own on a free loopback port, and the raw HTTP/1.1 the soak
and load runs speak to it (built by hand, so that broken and oversized requests can be sent too)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request

BOUNDARY = "deepautodnnbench"


SERVE_COMMAND = (sys.executable, "-m", "deepautodnn")


@contextlib.contextmanager
def running_server(model_dir, *serve_args: str, ready_timeout: float = 60.0, command=SERVE_COMMAND):
    """Yield (process, port) once /readyz says 200; stop the server afterwards. `command` is what
    runs `serve MODEL_DIR --port PORT [serve_args]`: the `deepautodnn` command unless told."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*command, "serve", str(model_dir), "--port", str(port), *serve_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "server did not become ready: " + server.stderr.read().decode()[-2000:]
                    ) from None
                time.sleep(0.1)
        yield server, port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def multipart_file_head(i: int = 0) -> bytes:
    """The boundary and headers that open file part `i` of a multipart body; its data comes next."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="f{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n"
    ).encode()


def multipart_body(files: list[bytes]) -> bytes:
    """A multipart/form-data body with each of `files` in the field "files"."""
    parts = b"".join(multipart_file_head(i) + data + b"\r\n" for i, data in enumerate(files))
    return parts + f"--{BOUNDARY}--\r\n".encode()


def http_request(
    path: str, body: bytes, content_type: str | None = None, method: str = "POST", length: int | None = None
) -> bytes:
    """One request's bytes; `length` declares a Content-Length other than the body's (to lie)."""
    content_type = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body
