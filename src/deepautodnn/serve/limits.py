"""What a client may send, and how slowly: a cap on the request body, and deadlines on the headers
and on the body, so that slow clients (slowloris) are cut off instead of holding connections.

`BodyLimit` is a pure ASGI middleware over the app's reads of the body. The first read is refused
at once when Content-Length declares more than the cap, and every read counts the bytes that
arrived, so a lying or absent length can't get past either (413). The body must also arrive within
`timeout_s` of the request's headers (408). Either way the app's read stops there, and the
middleware answers the service's JSON error `{"detail": "..."}` with `Connection: close`: the rest
of the body is not wanted. A request the app answers without reading all of its body (a 401, a
415, a malformed multipart body) keeps the app's answer, with `Connection: close` added for the
same reason, and because the server would otherwise wait for that rest with no deadline at all.

`slow_client_protocol` is uvicorn's HTTP protocol (httptools, or h11) with the deadline on the headers.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 10 * 2**20
DEFAULT_CLIENT_TIMEOUT_S = 15.0  # for a request's headers, and again for its body
CLOSE = {"Connection": "close"}  # for answers sent before the body was read: the rest of it is not wanted


class BodyRefused(Exception):
    """Raised from the app's `receive` to end its read of the body; `BodyLimit` answers it."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class BodyLimit:
    """ASGI middleware: at most `max_body_bytes` of request body (else 413), all of it within
    `timeout_s` of the request's headers (else 408)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, timeout_s: float):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _Body(scope, receive, self.max_body_bytes, self.timeout_s)
        responded = False

        async def send_closing_early(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                if not body.complete:  # the rest of the body is not wanted, and would have no deadline
                    message.setdefault("headers", [])
                    MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        try:
            await self.app(scope, body.receive, send_closing_early)
        except BodyRefused as refused:
            if responded:  # an answer is already under way: too late for another
                raise
            answer = JSONResponse({"detail": refused.detail}, refused.status_code, headers=CLOSE)
            await answer(scope, receive, send)


class _Body:
    """One request's body as the app reads it: counted against the cap and timed against the
    deadline until all of it has come (`complete`)."""

    def __init__(self, scope: Scope, receive: Receive, max_bytes: int, timeout_s: float):
        headers = Headers(scope=scope)
        self._receive = receive
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.declared = headers.get("content-length", "")
        self.received = 0
        self.complete = self.declared in ("", "0") and "transfer-encoding" not in headers  # no body at all
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + timeout_s

    async def receive(self) -> Message:
        if self.complete:  # what is left to wait for is a disconnect, for as long as the app likes
            return await self._receive()
        if self.declared.isdigit() and int(self.declared) > self.max_bytes:
            raise BodyRefused(413, f"request body of {int(self.declared)} bytes is over the limit of {self.max_bytes}")
        try:
            message = await asyncio.wait_for(self._receive(), self._deadline - self._loop.time())
        except asyncio.TimeoutError:
            raise BodyRefused(408, f"request body took longer than {self.timeout_s:g} s to arrive") from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_bytes:
                raise BodyRefused(413, f"request body is over the limit of {self.max_bytes} bytes")
            self.complete = not message.get("more_body", False)
        else:  # http.disconnect: the app hears of it, and there is no more body to time
            self.complete = True
        return message


def slow_client_protocol(timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S, parser: str = "auto"):
    """uvicorn's HTTP protocol, plus a deadline on request headers: they must all arrive within
        `timeout_s` of the connection opening or finishing its last response, else it is closed.
        (uvicorn alone times out idle kept-alive connections, but not one trickling a header.)

        `parser` is "httptools" (C, several times faster per request; in the [serve] extra), "h11"
        (pure Python), or "auto": httptools where it is installed. The class is this module's own, so
        that `serve --workers` can hand it to its worker processes; the deadline is one per process (the
    last call's), which is all a server process needs."""
    if parser == "auto":
        import importlib.util

        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if parser not in _PROTOCOLS:
        raise ValueError(f"unknown HTTP parser {parser!r}; use auto, httptools or h11")
    protocol = __getattr__(_PROTOCOLS[parser])
    protocol.deadline_s = timeout_s
    return protocol


_PROTOCOLS = {"httptools": "HeaderDeadlineHttpTools", "h11": "HeaderDeadlineH11"}


def __getattr__(name: str):
    """The protocol classes, made when first named (each imports its parser): a worker process
    finds them here by name when it unpickles uvicorn's config."""
    if name == "HeaderDeadlineHttpTools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class HeaderDeadlineHttpTools(_HeaderDeadline, HttpToolsProtocol):
            def on_headers_complete(self) -> None:
                self._disarm()  # the headers are in: the body has its own deadline (BodyLimit)
                super().on_headers_complete()

            def _headers_pending(self) -> bool:  # no request under way, pipelined ones included
                return self.cycle is None or self.cycle.response_complete

        protocol = HeaderDeadlineHttpTools
    elif name == "HeaderDeadlineH11":
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class HeaderDeadlineH11(_HeaderDeadline, H11Protocol):
            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                if not self._headers_pending():  # the headers are in: the body has its own deadline
                    self._disarm()

            def _headers_pending(self) -> bool:
                return self.conn.their_state is h11.IDLE

        protocol = HeaderDeadlineH11
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    protocol.__qualname__ = name
    globals()[name] = protocol
    return protocol


class _HeaderDeadline:
    """The header deadline, over either of uvicorn's HTTP protocols (whose subclass says when the
    headers are in and calls `_disarm`)."""

    deadline_s: float = DEFAULT_CLIENT_TIMEOUT_S
    _header_timer = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.deadline_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_pending(self) -> bool:
        raise NotImplementedError

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._headers_pending() and not self.transport.is_closing():  # never a request under way
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers on this kept-alive connection

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
