"""Load benchmark of the real HTTP service on loopback. Prints JSON.

Starts `deepautodnn serve MODEL_DIR` in its own process, waits for /readyz, sends an untimed
warm-up, then N concurrent keep-alive clients send single-image POST /v1/predict requests (Fashion-MNIST test images as
PNG, taken in turn) until the request budget is spent; it stops by itself. Each answer is checked
against the label the same backend gives its own image in-process. Reports throughput, latency
percentiles, errors, mismatches and the server's peak RSS.

    python benchmarks/serve_load.py MODEL_DIR [--clients 32] [--requests 5000] [--backend auto]

`--ab` drives the same server with ApacheBench instead (`ab -c CLIENTS -n REQUESTS`, a new connection
per request, one test image as the body), as a user measuring the service would; its command line is
recorded with the results. ab cannot parse JSON, so the answers are checked in two ways: ab counts a
reply of another length than the first as failed (the same image must get the same bytes back), and
one reply is compared with the label the same backend gives that image in-process.

`--profile` (with `--ab`, one worker) also records, during the timed run, the server's CPU seconds
per request from /proc, and py-spy's samples of its active Python threads by phase (HTTP, multipart
parsing, decoding and preprocessing, the model, unknown detection, the answer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _emit import emit_json, provenance
from PIL import Image

from deepautodnn import load_fashion_mnist  # noqa: E402
from deepautodnn.data.preprocess import load_image  # noqa: E402
from deepautodnn.experiments.http_load import (
    SERVE_COMMAND,
    http_request,
    multipart_body,
    read_response,
    running_server,
)
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


def run_ab(port: int, png: bytes, expected: int, clients: int, requests: int, warmup: int, timed=None) -> dict:
    """ApacheBench against the running server: ab's own figures, and one reply checked by label.
    `timed`, if given, is a context manager entered around the timed run only (the profiler)."""
    from deepautodnn.experiments.http_load import BOUNDARY

    if shutil.which("ab") is None:
        raise SystemExit("--ab needs ApacheBench: apt-get install apache2-utils")
    body = multipart_body([png])
    url = f"http://127.0.0.1:{port}/v1/predict?top_k=1"
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body)
        f.flush()

        def ab(n: int) -> str:
            command = ["ab", "-q", "-c", str(clients), "-n", str(n), "-p", f.name, "-T", content_type, url]
            return subprocess.run(command, capture_output=True, text=True, check=True).stdout

        ab(warmup)  # allocator, oneDNN kernels, first-call paths; not timed
        with timed or contextlib.nullcontext():
            report = ab(requests)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    answer = json.loads(urllib.request.urlopen(request, timeout=10).read())["predictions"][0]["label_index"]

    def number(label: str, required: bool = True) -> float:
        # ab indents some lines ("  50%    476"), and prints "Non-2xx responses" only when there are any.
        match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)", report, re.M)
        if match is None and required:
            raise SystemExit(f"ab's report has no {label!r} line:\n{report}")
        return float(match.group(1)) if match else 0.0

    return {
        "ab_command": f"ab -c {clients} -n {requests} -p BODY -T '{content_type}' {url}",
        "requests": int(number("Complete requests:")),
        "requests_per_second": number("Requests per second:"),
        "latency_ms": {f"p{q}": number(f"{q}%") for q in (50, 95, 99)} | {"max": number("100%")},
        "failed_requests": int(number("Failed requests:")),
        # Of those, replies whose length differed from the first one's: the same image must get the
        # same answer back, though a different micro-batch can round a probability's last digit.
        "length_failures": int(lengths.group(1))
        if (lengths := re.search(r"Receive: \d+, Length: (\d+)", report))
        else 0,
        "non_2xx_responses": int(number("Non-2xx responses:", required=False)),
        "checked_reply_matches_in_process": answer == expected,
        "ab_report": report,
    }


# Where a server's samples go: to the phase of the innermost frame of the stack that one of these
# markers names (the first rule that names it). C extensions (ONNX Runtime's kernels, orjson,
# uvloop) leave no frame of their own: their time is the calling Python frame's.
SERVE_PHASES = [
    ("model", ("backends.py", "graph.py", "onnxruntime")),
    ("unknown detection", ("ood.py",)),
    ("answer: records and JSON", ("prediction_record", "predictor.py", "render (")),
    ("decode and preprocess", ("preprocess.py", "PIL/")),
    ("multipart parsing", ("multipart", "formparsers")),
    ("event loop and thread hand-offs", ("asyncio/", "anyio/", "concurrent/futures", "threading.py")),
    ("HTTP: uvicorn, routing, middleware", ("uvicorn", "httptools", "h11", "starlette", "fastapi", "serve/")),
]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its threads so far (/proc/PID/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def profiled(pid: int, into: dict, requests: int):
    """The server's CPU time per request, and py-spy's samples of it by phase, into `into`."""
    from _pyspy import RATE_HZ, phases, sampling

    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "server.raw"
        before = cpu_seconds(pid)
        with sampling(pid, raw):
            yield
        cpu = cpu_seconds(pid) - before
        counts = phases(raw, SERVE_PHASES)
    total = sum(counts.values())
    into.update(
        {
            "tool": f"py-spy record --nonblocking --rate {RATE_HZ} (Python threads py-spy judges active)",
            "server_cpu_ms_per_request": round(cpu / requests * 1000, 3),  # every thread, from /proc
            "samples": total,
            "share_of_samples": {k: round(n / max(total, 1), 3) for k, n in counts.most_common()},
            # Active Python-thread time by phase. Not CPU time: a thread that waits for a core or for
            # the GIL can count as active, and native threads (ONNX Runtime's, OpenMP's) are not sampled.
            "sampled_ms_per_request": {k: round(n / RATE_HZ / requests * 1000, 3) for k, n in counts.most_common()},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "torch-bf16", "onnx", "onnx-int8"])
    parser.add_argument("--images", type=int, default=256, help="distinct test images cycled through (default: 256)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed requests first (default: 500)")
    parser.add_argument("--ab", action="store_true", help="load with ApacheBench, a new connection per request")
    parser.add_argument("--workers", type=int, default=1, help="`serve --workers` (default: 1)")
    parser.add_argument(
        "--profile", action="store_true", help="with --ab: sample the server with py-spy, CPU per request by phase"
    )
    parser.add_argument(
        "--server-cpu",
        type=int,
        help="pin the server to this one core (taskset) and the load to the others: what one core serves",
    )
    args = parser.parse_args()
    if args.profile and not (args.ab and args.workers == 1):
        parser.error("--profile samples one server process under ab: it needs --ab and --workers 1")
    if args.profile and not Path("/proc/self/stat").exists():
        parser.error("--profile reads the server's CPU time from /proc: Linux only")
    command = SERVE_COMMAND
    if args.server_cpu is not None:
        others = os.sched_getaffinity(0) - {args.server_cpu}
        if not others:
            raise SystemExit("--server-cpu needs a second core for the load")
        os.sched_setaffinity(0, others)  # this process, and ab, load from the other cores
        command = ("taskset", "-c", str(args.server_cpu), *SERVE_COMMAND)
    placement = (
        {"server_cpus": [args.server_cpu], "load_cpus": sorted(os.sched_getaffinity(0))}
        if args.server_cpu is not None
        else {"client_and_server_share_the_cpu": os.cpu_count()}
    )

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

    serve_args = ["--backend", args.backend, "--workers", str(args.workers)]
    if args.ab:
        profile: dict = {}
        with running_server(args.model_dir, *serve_args, command=command) as (server, port):
            timed = profiled(server.pid, profile, args.requests) if args.profile else None
            result = run_ab(port, pngs[0], expected[0], args.clients, args.requests, args.warmup, timed)
            rss = peak_rss_mib(server.pid)
        emit_json(
            {
                "benchmark": "serve_load",
                "command": "python " + " ".join(sys.argv),
                "commit": provenance()["commit"],
                "load": "ApacheBench, a new connection per request",
                "backend": args.backend,
                "backend_used": reference.name,
                "workers": args.workers,
                "clients": args.clients,
                **result,
                # Connection, receive and non-2xx failures; answers of another length are counted apart.
                "errors": result["failed_requests"] - result["length_failures"] + result["non_2xx_responses"],
                "server_peak_rss_mib": round(rss, 1),
                **({"server_profile": profile} if profile else {}),
                "targets": {"requests_per_second": 500, "p99_ms": 150, "errors": 0},
                "machine": machine_info(),
                **placement,
            }
        )
        return

    with running_server(args.model_dir, *serve_args, command=command) as (server, port):
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
            "commit": provenance()["commit"],
            "backend": args.backend,
            "backend_used": reference.name,
            "workers": args.workers,
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
            **placement,
        }
    )


if __name__ == "__main__":
    main()
