"""Load benchmark of the real HTTP service on loopback. Prints JSON.

Starts `deepautodnn serve MODEL_DIR` in its own process, waits for /readyz, sends an untimed
warm-up, then N concurrent keep-alive clients send single-image POST /v1/predict requests (Fashion-MNIST test images as
PNG, taken in turn) until the request budget is spent; it stops by itself. Each answer is checked
against the label the same backend gives its own image in-process. Reports throughput, latency
percentiles, errors, mismatches and the server's peak RSS.

    python benchmarks/serve_load.py MODEL_DIR [--clients 32] [--requests 5000] [--backend auto]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import time

import numpy as np
from _emit import emit_json
from PIL import Image

from deepautodnn import load_fashion_mnist  # noqa: E402
from deepautodnn.data.preprocess import load_image  # noqa: E402
from deepautodnn.experiments.http_load import http_request, multipart_body, read_response, running_server
from deepautodnn.inference.backends import make_backend  # noqa: E402
from deepautodnn.utils.runtime import machine_info  # noqa: E402


async def client(port: int, requests: list[bytes], expected: list[int], counter: dict, results: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while counter["next"] < counter["total"]:
            i = counter["next"]
            counter["next"] += 1
            k = i % len(requests)
            start = time.perf_counter()
            writer.write(requests[k])
            await writer.drain()
            status, _, body = await read_response(reader)
            latency = time.perf_counter() - start
            ok = status == 200 and json.loads(body)["predictions"][0]["label_index"] == expected[k]
            results.append((latency, status, ok))
    finally:
        writer.close()


def peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "torch-bf16", "onnx", "onnx-int8"])
    parser.add_argument("--images", type=int, default=256, help="distinct test images cycled through (default: 256)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed requests first (default: 500)")
    args = parser.parse_args()

    images, _ = load_fashion_mnist("test")
    images = images[: args.images]
    pngs = []
    for arr in images:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        pngs.append(buf.getvalue())
    inputs = np.stack([load_image(p) for p in pngs])
    # The same backend in-process: each answer must be exactly what the server's model gives.
    reference = make_backend(args.model_dir, args.backend)
    expected = reference.run(inputs)[0].argmax(1).tolist()

    with running_server(args.model_dir, "--backend", args.backend) as (server, port):
        requests = [http_request("/v1/predict?top_k=1", multipart_body([p])) for p in pngs]

        async def run(total: int) -> list:
            counter, results = {"next": 0, "total": total}, []
            await asyncio.gather(*(client(port, requests, expected, counter, results) for _ in range(args.clients)))
            return results

        warmup = asyncio.run(run(args.warmup))  # allocator, oneDNN kernels, first-call paths; not timed
        start = time.perf_counter()
        results = asyncio.run(run(args.requests))
        wall = time.perf_counter() - start
        rss = peak_rss_mib(server.pid)
    lat = sorted(r[0] * 1000 for r in results)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    emit_json(
        {
            "benchmark": "serve_load",
            "command": "python " + " ".join(sys.argv),
            "backend": args.backend,
            "backend_used": reference.name,
            "clients": args.clients,
            "requests": len(results),
            "warmup_requests": len(warmup),
            "warmup_errors": sum(1 for r in warmup if r[1] != 200 or not r[2]),
            "wall_seconds": round(wall, 2),
            "requests_per_second": round(len(results) / wall, 1),
            "latency_ms": {
                "p50": round(pct(0.50), 2),
                "p95": round(pct(0.95), 2),
                "p99": round(pct(0.99), 2),
                "mean": round(statistics.mean(lat), 2),
            },
            "errors": sum(1 for r in results if r[1] != 200),
            "wrong_answers": sum(1 for r in results if r[1] == 200 and not r[2]),
            "server_peak_rss_mib": round(rss, 1),
            "targets": {"requests_per_second": 500, "p99_ms": 150, "errors": 0},
            "machine": machine_info(),
            "client_and_server_share_the_cpu": os.cpu_count(),
        }
    )


if __name__ == "__main__":
    main()
