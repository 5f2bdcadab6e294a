"""serve/limits.py: the body cap and the body deadline, on a bare ASGI app (no model, no server).
The real server's answers to oversized and slow clients are tests/experiments/test_soak.py's."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from deepautodnn.serve.limits import BodyLimit

LIMIT, TIMEOUT_S = 100, 0.2


async def reading_app(scope, receive, send):
    """Reads the whole body, then answers with its length."""
    body = await Request(scope, receive).body()
    await JSONResponse({"bytes": len(body)})(scope, receive, send)


async def refusing_app(scope, receive, send):
    """Answers without reading the body, as the service does without a token."""
    await JSONResponse({"detail": "no"}, 401)(scope, receive, send)


async def lingering_app(scope, receive, send):
    """Reads the whole body, then waits on `receive` for a disconnect, as a streaming answer does."""
    body = await Request(scope, receive).body()
    after = await receive()
    await JSONResponse({"bytes": len(body), "then": after["type"]})(scope, receive, send)


def call(app, chunks: list[bytes], *, content_length: int | None = None, delay: float = 0.0):
    """One POST through BodyLimit(app): the body in `chunks`, each `delay` s after the last, sent
    chunked unless `content_length` is declared. (status, headers, JSON answer, how many times the
    app's reads reached the client)."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent, reads = [], [0]

    async def receive():
        reads[0] += 1
        await asyncio.sleep(delay)
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = [(b"content-type", b"application/octet-stream")]
    if content_length is None:
        headers.append((b"transfer-encoding", b"chunked"))
    else:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    asyncio.run(BodyLimit(app, max_body_bytes=LIMIT, timeout_s=TIMEOUT_S)(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body), reads[0]


@pytest.mark.parametrize("content_length", [None, 100])
def test_a_body_within_the_limit_reaches_the_app_whole_and_the_connection_stays(content_length):
    status, headers, answer, _ = call(reading_app, [b"a" * 60, b"b" * 40], content_length=content_length)
    assert (status, answer) == (200, {"bytes": 100}) and "connection" not in headers


def test_a_declared_length_over_the_limit_is_refused_before_any_byte_is_read():
    status, headers, answer, reads = call(reading_app, [b"a" * 10], content_length=LIMIT + 1)
    assert status == 413 and headers["connection"] == "close" and reads == 0
    assert answer == {"detail": f"request body of {LIMIT + 1} bytes is over the limit of {LIMIT}"}


@pytest.mark.parametrize("content_length", [None, 50])  # none declared, or a lie
def test_bytes_past_the_limit_are_refused_as_they_arrive(content_length):
    status, headers, answer, reads = call(reading_app, [b"a" * 60] * 5, content_length=content_length)
    assert status == 413 and headers["connection"] == "close" and reads == 2  # not all five
    assert answer == {"detail": f"request body is over the limit of {LIMIT} bytes"}


def test_a_body_slower_than_the_timeout_gets_408():
    status, headers, answer, _ = call(reading_app, [b"a"] * 3, delay=TIMEOUT_S * 0.6)
    assert status == 408 and headers["connection"] == "close"
    assert answer == {"detail": f"request body took longer than {TIMEOUT_S:g} s to arrive"}


def test_the_deadline_ends_with_the_body():
    status, _, answer, _ = call(lingering_app, [b"a"], delay=TIMEOUT_S * 0.6)  # the disconnect comes later
    assert (status, answer) == (200, {"bytes": 1, "then": "http.disconnect"})


@pytest.mark.parametrize("content_length", [None, 10, LIMIT * 10])
def test_an_answer_before_the_whole_body_keeps_its_status_and_closes(content_length):
    status, headers, answer, reads = call(refusing_app, [b"a" * 10], content_length=content_length)
    assert (status, answer, reads) == (401, {"detail": "no"}, 0)
    assert headers["connection"] == "close"  # else the server would wait for the rest with no deadline


def test_a_request_without_a_body_keeps_its_connection():
    status, headers, _, _ = call(refusing_app, [b""], content_length=0)
    assert status == 401 and "connection" not in headers


def test_lifespan_and_websocket_scopes_pass_through_untouched():
    seen = []

    async def app(scope, receive, send):
        seen.append((scope["type"], receive is receive_marker))

    async def receive_marker():
        return {}

    async def send(message):
        pass

    for kind in ("lifespan", "websocket"):
        asyncio.run(BodyLimit(app, max_body_bytes=LIMIT, timeout_s=TIMEOUT_S)({"type": kind}, receive_marker, send))
    assert seen == [("lifespan", True), ("websocket", True)]


def test_a_refusal_after_the_answer_started_is_not_a_second_answer():
    async def streaming_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await Request(scope, receive).body()  # reads past the cap while answering

    with pytest.raises(Exception, match="over the limit"):
        call(streaming_app, [b"x" * 60, b"x" * 60])


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_header_deadline_holds_with_either_http_parser(parser):
    """A real uvicorn with `slow_client_protocol`: a client trickling its headers is cut off after
    the deadline; one that sends them in time is answered, and its kept-alive connection gets the
    deadline again for the next request."""
    import socket
    import threading
    import time

    import uvicorn

    from deepautodnn.serve.limits import slow_client_protocol

    pytest.importorskip(parser)
    deadline = 0.5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        reading_app, host="127.0.0.1", port=port, http=slow_client_protocol(deadline, parser), log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(request)
            assert b'{"bytes":2}' in c.recv(4096)
            # Headers in time, then a body slower than the header deadline: that deadline is over
            # once the headers are in (the body has BodyLimit's own), so this one is answered.
            c.sendall(request[:-2])
            time.sleep(deadline * 1.5)
            c.sendall(request[-2:])
            assert b'{"bytes":2}' in c.recv(4096)
            start = time.monotonic()
            c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # then nothing more: a slow client
            assert c.recv(4096) == b""  # closed by the server
            assert deadline * 0.8 <= time.monotonic() - start < deadline + 3
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_an_unknown_http_parser_is_refused():
    from deepautodnn.serve.limits import slow_client_protocol

    with pytest.raises(ValueError, match="unknown HTTP parser"):
        slow_client_protocol(1.0, "picohttp")
