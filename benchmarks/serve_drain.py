"""Graceful shutdown under load: SIGTERM to the real HTTP service while clients keep sending. Prints JSON.

Starts `deepautodnn serve MODEL_DIR --access-log json` in its own process, waits for /readyz, then N
concurrent clients send single-image POST /v1/predict requests (Fashion-MNIST test images as PNG,
taken in turn), each on a new connection, and SIGTERM goes to the server after --load-seconds. Each
client stops at its first refused connection. Reports the requests that connected (`accepted`), how
many of them got an answer and how many of those were not 200, those refused at connect, and the
seconds from SIGTERM to the last answer and to the server's exit.

A connection still in the kernel's queue when the server closes its listener, or one it has accepted
but not yet read, is reset: it counts as accepted here but never reached the service. The service's
own access log says how many did (`reached_the_service`): those must all have been answered.

    python benchmarks/serve_drain.py MODEL_DIR [--clients 32] [--load-seconds 5] [--drain-seconds 30]
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from _emit import emit_json
from PIL import Image

from deepautodnn import load_fashion_mnist
from deepautodnn.experiments.http_load import drain_under_load, http_request, multipart_body, running_server
from deepautodnn.utils.runtime import machine_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--load-seconds", type=float, default=5.0, help="load before SIGTERM (default: 5)")
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="`serve --drain-seconds` (default: 30)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "torch-bf16", "onnx", "onnx-int8"])
    parser.add_argument("--workers", type=int, default=1, help="`serve --workers` (default: 1)")
    parser.add_argument("--images", type=int, default=256, help="distinct test images cycled through (default: 256)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    images, _ = load_fashion_mnist("test")
    requests = []
    for arr in images[: args.images]:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        requests.append(http_request("/v1/predict?top_k=1", multipart_body([buf.getvalue()])))

    serve_args = ["--backend", args.backend, "--workers", str(args.workers), "--drain-seconds", str(args.drain_seconds)]
    with tempfile.TemporaryDirectory() as tmp:
        access_log = Path(tmp) / "access.jsonl"
        with (
            access_log.open("wb") as log,
            running_server(args.model_dir, *serve_args, "--access-log", "json", stdout=log, ready_timeout=120) as (
                server,
                port,
            ),
        ):
            drain = drain_under_load(
                server,
                port,
                requests,
                clients=args.clients,
                load_s=args.load_seconds,
                exit_timeout=args.drain_seconds + 30,
            )
        logged = [json.loads(line) for line in access_log.read_text().splitlines() if line.strip()]
    served = [r for r in logged if r["path"] == "/v1/predict"]
    answered = len(drain.statuses)
    not_ok = sum(1 for s in drain.statuses if s != 200)
    emit_json(
        {
            "benchmark": "serve_drain",
            "command": "python " + " ".join(sys.argv),
            "backend": args.backend,
            "workers": args.workers,
            "clients": args.clients,
            "load_seconds": args.load_seconds,
            "drain_seconds_limit": args.drain_seconds,
            "accepted": answered + len(drain.unanswered),
            "answered": answered,
            "failed_among_accepted": not_ok + len(drain.unanswered),
            "answered_not_200": not_ok,
            "reset_without_answer": dict(collections.Counter(drain.unanswered)),
            "refused_at_connect": drain.refused,
            "reached_the_service": len(served),
            "reached_the_service_by_status": dict(collections.Counter(str(r["status"]) for r in served)),
            "answered_after_sigterm": drain.answered_after_sigterm,
            "seconds_sigterm_to_last_answer": _round(drain.last_answer_seconds),
            "drain_seconds": _round(drain.exit_seconds),  # SIGTERM to the server's exit
            "exit_code": drain.exit_code,
            "machine": machine_info(),
            "client_and_server_share_the_cpu": os.cpu_count(),
        },
        args.out,
    )


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


if __name__ == "__main__":
    main()
