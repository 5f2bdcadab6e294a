"""A soak of the real HTTP service: many clients sending valid, invalid and oversized requests
while slow clients (slowloris-style) hold connections open. Shared by tests/experiments/test_soak.py (short)
and benchmarks/soak_service.py (about 10,000 requests).

`soak(model_dir, ...)` starts `deepautodnn serve` in its own process on a free loopback port,
sends an untimed warm-up of the same mix, reads the server's RSS, runs the soak, reads the RSS
again and stops the server. Every request knows the status it must get; the result counts what
came back, by kind. It is bounded: a fixed number of requests and a wall-clock limit.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from deepautodnn.experiments.http_load import (
    BOUNDARY,
    http_request,
    multipart_body,
    multipart_file_head,
    read_response,
    running_server,
)

MAX_BODY_MB = 1  # the server's limit in the soak, so an oversized request costs ~1 MiB, not 10
# kind: (share of requests, the status it must get)
MIX = {
    "valid": (0.55, 200),
    "valid-batch": (0.08, 200),  # three images in one request
    "garbage-image": (0.08, 422),  # random bytes as the file
    "bomb-image": (0.02, 422),  # a tiny PNG declaring 100,000 x 100,000 pixels
    "not-multipart": (0.05, 415),
    "malformed-multipart": (0.05, 400),
    "bad-top-k": (0.04, 422),
    "no-files": (0.03, 422),
    "oversized-declared": (0.04, 413),  # Content-Length over the limit
    "oversized-chunked": (0.03, 413),  # no length, a file's chunks past the limit
    "wrong-path": (0.02, 404),
    "wrong-method": (0.01, 405),
}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def build_requests(pngs: list[bytes], rng: random.Random) -> dict[str, list]:
    """A few ready-made requests of every kind; (bytes, image index or None) each."""
    limit = MAX_BODY_MB * 2**20
    out: dict[str, list] = {k: [] for k in MIX}
    for i in range(min(len(pngs), 64)):
        out["valid"].append((http_request("/v1/predict?top_k=1", multipart_body([pngs[i]])), i))
    batch = [pngs[j % len(pngs)] for j in range(3)]
    out["valid-batch"].append((http_request("/v1/predict?top_k=2", multipart_body(batch)), None))
    for _ in range(8):
        garbage = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000)))
        out["garbage-image"].append((http_request("/v1/predict", multipart_body([garbage])), None))
    out["bomb-image"].append((http_request("/v1/predict", multipart_body([_bomb_png()])), None))
    out["not-multipart"].append((http_request("/v1/predict", b'{"image": 1}', content_type="application/json"), None))
    out["malformed-multipart"].append(
        (http_request("/v1/predict", b"--" + BOUNDARY.encode() + b"\r\nnot a part"), None)
    )
    out["bad-top-k"].append((http_request("/v1/predict?top_k=0", multipart_body([pngs[0]])), None))
    out["no-files"].append((http_request("/v1/predict", f"--{BOUNDARY}--\r\n".encode()), None))
    # Declares more than the limit and sends only a little of it: refused on the header alone.
    out["oversized-declared"].append((http_request("/v1/predict", b"x" * 1024, length=limit + 1), None))
    out["oversized-chunked"].append(("chunked", None))  # written chunk by chunk by the client
    out["wrong-path"].append((b"GET /v1/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", None))
    out["wrong-method"].append((b"GET /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", None))
    return out


async def _send_chunked_oversized(writer: asyncio.StreamWriter) -> None:
    writer.write(
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
        f"boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    head = multipart_file_head()  # well formed, so that only the limit stops the server reading
    writer.write(f"{len(head):x}\r\n".encode() + head + b"\r\n")
    piece = b"y" * 65536
    for _ in range(MAX_BODY_MB * 16 + 4):  # past the limit
        writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


class _Connection:
    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def ensure(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _client(
    port: int, plan: list[tuple[str, bytes | str, int | None]], expected: list[int], next_index: list[int], stats: dict
) -> None:
    conn = _Connection(port)
    try:
        while next_index[0] < len(plan):
            kind, payload, image = plan[next_index[0]]
            next_index[0] += 1
            start = time.perf_counter()
            try:
                await conn.ensure()
                try:
                    if payload == "chunked":
                        await _send_chunked_oversized(conn.writer)
                    else:
                        conn.writer.write(payload)
                        await conn.writer.drain()
                except ConnectionError:
                    pass  # the server may answer and close before taking all of an oversized body
                status, headers, body = await read_response(conn.reader)
            except (ConnectionError, asyncio.IncompleteReadError) as err:
                stats["connection_errors"][kind] += 1
                stats["connection_error_examples"].append(f"{kind}: {type(err).__name__}")
                conn.close()
                continue
            latency = time.perf_counter() - start
            stats["status"][f"{kind} {status}"] += 1
            if status == MIX[kind][1] == 200:
                stats["latencies"].append(latency)
                if image is not None and json.loads(body)["predictions"][0]["label_index"] != expected[image]:
                    stats["wrong_answers"] += 1
            if headers.get("connection", "").lower() == "close" or kind.startswith("oversized"):
                conn.close()  # an unread body can't be skipped on a kept-alive connection
    finally:
        conn.close()


async def _slow_client(port: int, interval: float, give_up: asyncio.Event, record: list, slow_body: bool) -> None:
    """Slowloris: one byte of an endless header (or of a long body) every `interval` seconds, until
    the server closes the connection or the soak gives up on it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened, sent, answer = time.perf_counter(), 0, b""
    if slow_body:
        writer.write(
            f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n".encode()
            + multipart_file_head()  # well formed, so that only the deadline stops the server reading
        )
    else:
        writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    outcome = "still open when the soak gave up on it"
    try:
        while not give_up.is_set():
            writer.write(b"a")
            await writer.drain()
            sent += 1
            try:
                data = await asyncio.wait_for(reader.read(4096), interval)
            except asyncio.TimeoutError:
                continue
            answer += data
            if not data:  # EOF: the server hung up
                outcome = "closed by the server"
                break
    except ConnectionError:
        outcome = "closed by the server"
    status = answer.split(b"\r\n", 1)[0].decode("latin-1") if answer else None
    record.append(
        {
            "slow": "body" if slow_body else "header",
            "bytes_sent": sent,
            "outcome": outcome,
            "server_answer": status,
            "seconds": round(time.perf_counter() - opened, 1),
        }
    )
    writer.close()


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def _plan(n: int, requests: dict[str, list], rng: random.Random) -> list:
    kinds = rng.choices(list(MIX), weights=[share for share, _ in MIX.values()], k=n)
    return [(kind, *rng.choice(requests[kind])) for kind in kinds]


async def _run(
    port: int,
    plan: list,
    expected: list[int],
    clients: int,
    slow_clients: int,
    interval: float,
    time_limit: float,
    slow_wait: float = 0.0,
) -> dict:
    stats = {
        "status": Counter(),
        "connection_errors": Counter(),
        "connection_error_examples": [],
        "latencies": [],
        "wrong_answers": 0,
        "slow_clients": [],
    }
    give_up = asyncio.Event()
    slow = [
        asyncio.create_task(_slow_client(port, interval, give_up, stats["slow_clients"], slow_body=i % 2 == 1))
        for i in range(slow_clients)
    ]
    await asyncio.sleep(interval)  # the slow clients hold their connections before the load starts
    start = time.perf_counter()
    next_index = [0]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(_client(port, plan, expected, next_index, stats) for _ in range(clients))), time_limit
        )
        stats["finished"] = True
    except asyncio.TimeoutError:
        stats["finished"] = False
    stats["wall_seconds"] = time.perf_counter() - start
    # Give the slow clients until `slow_wait` after they opened to be cut off, then stop them.
    if slow:
        await asyncio.wait(slow, timeout=max(0.0, slow_wait - stats["wall_seconds"]))
    give_up.set()
    await asyncio.gather(*slow)
    return stats


def soak(
    model_dir: str | Path,
    *,
    requests: int,
    clients: int,
    slow_clients: int = 4,
    warmup: int = 500,
    seed: int = 0,
    slow_interval: float = 0.5,
    client_timeout: float = 5.0,
    time_limit: float = 600.0,
    data_dir=None,
) -> dict:
    """Run the soak against `deepautodnn serve MODEL_DIR --client-timeout CLIENT_TIMEOUT`; the
    result as a JSON-ready dict. Slow clients are given CLIENT_TIMEOUT + 5 s to be cut off."""
    from deepautodnn.data.fashion_mnist import load_fashion_mnist
    from deepautodnn.data.preprocess import load_image
    from deepautodnn.inference.backends import make_backend

    rng = random.Random(seed)
    images, _ = load_fashion_mnist("test", data_dir)
    pngs = [_png(a) for a in images[:64]]
    expected = make_backend(model_dir).run(np.stack([load_image(p) for p in pngs]))[0].argmax(1).tolist()
    ready_made = build_requests(pngs, rng)
    with running_server(model_dir, "--max-body-mb", str(MAX_BODY_MB), "--client-timeout", str(client_timeout)) as (
        server,
        port,
    ):
        asyncio.run(_run(port, _plan(warmup, ready_made, rng), expected, clients, 0, slow_interval, time_limit))
        rss_before = _rss_mib(server.pid)
        stats = asyncio.run(
            _run(
                port,
                _plan(requests, ready_made, rng),
                expected,
                clients,
                slow_clients,
                slow_interval,
                time_limit,
                slow_wait=client_timeout + 5,
            )
        )
        rss_after = _rss_mib(server.pid)
        alive = server.poll() is None
    by_status = Counter()
    for key, n in stats["status"].items():
        by_status[int(key.rsplit(" ", 1)[1])] += n
    wrong_status = {k: n for k, n in stats["status"].items() if int(k.rsplit(" ", 1)[1]) != MIX[k.rsplit(" ", 1)[0]][1]}
    lat = sorted(x * 1000 for x in stats["latencies"])
    pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)) if lat else (lambda q: None)
    answered = sum(stats["status"].values())
    return {
        "requests": requests,
        "answered": answered,
        "clients": clients,
        "slow_clients": slow_clients,
        "warmup_requests": warmup,
        "finished_in_time": stats["finished"],
        "seconds": round(stats["wall_seconds"], 1),
        "requests_per_s": round(answered / stats["wall_seconds"], 1),
        "status_counts": {str(k): n for k, n in sorted(by_status.items())},
        "by_kind": dict(sorted(stats["status"].items())),
        "server_errors_5xx": sum(n for code, n in by_status.items() if code >= 500),
        "unexpected_status": wrong_status,
        "connection_errors": dict(stats["connection_errors"]),
        "wrong_answers": stats["wrong_answers"],
        "valid_latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": lat[-1] if lat else None},
        "server_rss_mib": {
            "after_warmup": round(rss_before, 1),
            "after_soak": round(rss_after, 1),
            "growth_percent": round((rss_after / rss_before - 1) * 100, 2),
        },
        "server_alive_after": alive,
        "slow_client_outcomes": stats["slow_clients"],
        "max_body_mb": MAX_BODY_MB,
        "client_timeout_s": client_timeout,
    }
