"""`deepautodnn serve` in a process of its own on a free loopback port, the raw HTTP/1.1 the soak
and load runs speak to it (built by hand, so that broken and oversized requests can be sent too),
and `drain_under_load`: SIGTERM to the server in the middle of a load, and what became of each request."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

BOUNDARY = "deepautodnnbench"


SERVE_COMMAND = (sys.executable, "-m", "deepautodnn")


@contextlib.contextmanager
def running_server(
    model_dir, *serve_args: str, ready_timeout: float = 60.0, command=SERVE_COMMAND, stdout=subprocess.DEVNULL
):
    """Yield (process, port) once /readyz says 200; stop the server afterwards. `command` is what
    runs `serve MODEL_DIR --port PORT [serve_args]`: the `deepautodnn` command unless told. The
    server's stdout (its access log) goes to `stdout`, a file, or nowhere."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*command, "serve", str(model_dir), "--port", str(port), *serve_args],
        stdout=stdout,
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


@dataclass
class Drain:
    """What `drain_under_load` saw: each answer's status, the connections refused (the server had
    stopped accepting), the requests that connected but got no answer (each one's error), and the
    server's exit."""

    statuses: list[int] = field(default_factory=list)
    refused: int = 0
    unanswered: list[str] = field(default_factory=list)
    answered_after_sigterm: int = 0
    exit_code: int | None = None
    exit_seconds: float | None = None  # from SIGTERM to the process's exit
    last_answer_seconds: float | None = None  # from SIGTERM to the last answer


def drain_under_load(
    server: subprocess.Popen, port: int, requests: list[bytes], *, clients: int, load_s: float, exit_timeout: float = 60
) -> Drain:
    """`clients` concurrent loops send `requests` in turn, each on a new connection, and SIGTERM goes
    to `server` after `load_s` seconds; each loop ends at its first refused connection (or after
    `exit_timeout` more seconds). Then waits for the server to exit. A new connection per request,
    because a request sent on a kept-alive connection that the server closes at that moment is lost
    by HTTP's design (clients retry those), which would blur the count this is for."""
    return asyncio.run(_drain_under_load(server, port, requests, clients, load_s, exit_timeout))


async def _drain_under_load(server, port, requests, clients, load_s, exit_timeout) -> Drain:
    drain = Drain()
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []  # when SIGTERM went, once it has
    give_up = loop.time() + load_s + exit_timeout

    async def client(offset: int) -> None:
        i = offset
        while loop.time() < give_up:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                drain.refused += 1
                return
            try:
                writer.write(requests[i % len(requests)])
                await writer.drain()
                status, _, _ = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as err:
                drain.unanswered.append(type(err).__name__)
            else:
                drain.statuses.append(status)
                if sent_at:
                    drain.answered_after_sigterm += 1
                    drain.last_answer_seconds = loop.time() - sent_at[0]
            finally:
                writer.close()
            i += clients

    async def terminate() -> None:
        await asyncio.sleep(load_s)
        server.send_signal(signal.SIGTERM)
        sent_at.append(loop.time())
        try:
            drain.exit_code = await asyncio.to_thread(server.wait, exit_timeout)
            drain.exit_seconds = loop.time() - sent_at[0]
        except subprocess.TimeoutExpired:
            pass  # exit_code stays None

    await asyncio.gather(terminate(), *(client(k) for k in range(clients)))
    return drain
