"""What the service tells its operators: Prometheus metrics (`GET /metrics`) and, with
`serve --access-log json`, one JSON line per request on stdout.

`Metrics` keeps one app's metrics in a registry of its own, not prometheus_client's global one, so
that several apps in one process (the tests) count apart. Under `serve --workers N` every worker
has its own app, and a scrape reaches whichever worker the kernel hands the connection to: each
would report only its own counts, which jump about from scrape to scrape. So there the CLI points
`PROMETHEUS_MULTIPROC_DIR` at a fresh folder before the workers start, prometheus_client keeps each
process's values in files there, and /metrics reports the sum over all workers (prometheus_client's
multiprocess mode). The process metrics (memory, CPU) are reported only with one worker: they are
one process's own and do not add up.

`Observed` is the ASGI middleware that counts and times every request, and writes its access-log line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROCESS_VARIABLE", "Metrics", "Observed", "print_line"]

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # images; the micro-batcher takes at most 256
OTHER_ROUTE = "other"  # the route label of a path the app has no route for: bounded, whatever is asked


class Metrics:
    """One app's Prometheus metrics; `exposition()` is what /metrics answers."""

    def __init__(self, version: str):
        self.version = version
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_VARIABLE))
        self.registry = CollectorRegistry()
        if not self.multiprocess:
            ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "deepautodnn_http_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "deepautodnn_http_request_duration_seconds",
            "time from a request's headers to the end of its answer",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_images = Histogram(
            "deepautodnn_batch_images",
            "images in each forward pass of the micro-batcher",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter("deepautodnn_images_classified", "images classified", registry=self.registry)
        self.unknown = Counter(
            "deepautodnn_images_unknown",
            "images flagged unknown (not like the training images); the rate is this over images_classified",
            registry=self.registry,
        )
        self.model = Gauge(
            "deepautodnn_model_info",
            "1, labelled with the model being served: deepautodnn's version, the preset, the backend and "
            "the first 12 hex digits of the weights' SHA-256, which tell two models apart (absent while it loads)",
            ["version", "preset", "backend", "model"],
            multiprocess_mode="max",  # the same series from every worker: report it once
            registry=self.registry,
        )

    def model_loaded(self, preset: str, backend: str, weights_sha256: str | None) -> None:
        model = (weights_sha256 or "unknown")[:12]
        self.model.labels(version=self.version, preset=preset, backend=backend, model=model).set(1)

    def observe_batch(self, predictions: list[dict]) -> None:
        """One forward pass's answers, as `Predictor.predict` gave them."""
        self.batch_images.observe(len(predictions))
        self.images.inc(len(predictions))
        self.unknown.inc(sum(1 for p in predictions if p["unknown"]))

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format: this app's, or, in multiprocess mode, every worker's summed."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)


def print_line(line: str) -> None:
    """An access-log line to stdout, at once (sys.stdout looked up each time, so tests can capture it)."""
    print(line, flush=True)


class Observed:
    """ASGI middleware: each HTTP request counted by route and status and timed, and with an
    `access_log`, one JSON object for it: time (its arrival, UTC), method, path, status, duration_ms,
    client, images (the number the request had classified; 0 for other routes).

    The status is the answer's, or 500 where the app had begun none: for an exception Starlette's
    outer middleware answers that, for a request cut off at the drain deadline uvicorn does."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, routes: frozenset[str], access_log: Callable[[str], None] | None
    ):
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.time()
        start = time.perf_counter()
        status = 500  # until the app starts an answer

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            seconds = time.perf_counter() - start
            route = scope["path"] if scope["path"] in self.routes else OTHER_ROUTE
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(seconds)
            if self.access_log is not None:
                self.access_log(json.dumps(access_record(scope, status, arrived, seconds)))


def access_record(scope: Scope, status: int, arrived: float, seconds: float) -> dict:
    client = scope.get("client")
    return {
        "time": datetime.fromtimestamp(arrived, timezone.utc).isoformat(timespec="milliseconds"),
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "client": client[0] if client else None,  # the proxy's X-Forwarded-For where uvicorn trusts it
        "images": scope.get("state", {}).get("images", 0),  # set by POST /v1/predict
    }
