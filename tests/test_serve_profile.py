"""`benchmarks/serve_load.py --profile`'s accounting: each py-spy stack goes to the phase of its
innermost frame that a rule names, whatever outer frames (uvicorn, the route) every stack shares."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _pyspy import phases  # noqa: E402
from serve_load import SERVE_PHASES, cpu_seconds  # noqa: E402

OUTER = (
    "process 1;<module> (deepautodnn/__main__.py:3);run (uvicorn/main.py:580);run_forever (asyncio/base_events.py:608)"
)
ROUTE = f"{OUTER};__call__ (starlette/middleware/errors.py:164);predict (deepautodnn/serve/app.py:286)"
THREAD = "process 1;_bootstrap (threading.py:995);run (concurrent/futures/thread.py:58)"
STACKS = {
    f"{ROUTE};model_inputs (deepautodnn/serve/app.py:232);load_preprocessed (deepautodnn/data/preprocess.py:90);"
    "label (scipy/ndimage/_measurements.py:43)": ("decode and preprocess", 7),
    f"{ROUTE};form (starlette/requests.py:260);parse (starlette/formparsers.py:220)": ("multipart parsing", 2),
    f"{OUTER};data_received (uvicorn/protocols/http/httptools_impl.py:160)": ("HTTP: uvicorn, routing, middleware", 3),
    f"{OUTER};_run_once (asyncio/base_events.py:1922)": ("event loop and thread hand-offs", 1),
    f"{THREAD};_run (deepautodnn/serve/predictor.py:150);predict (deepautodnn/serve/predictor.py:71);"
    "run_with_detection (deepautodnn/inference/predict.py:50);knn (deepautodnn/inference/ood.py:117);"
    "__rsub__ (torch/_tensor.py:1080)": ("unknown detection", 4),
    f"{THREAD};_run (deepautodnn/serve/predictor.py:150);predict (deepautodnn/serve/predictor.py:71);"
    "run_with_detection (deepautodnn/inference/predict.py:50);run (deepautodnn/inference/backends.py:120);"
    "run (onnxruntime/capi/onnxruntime_inference_collection.py:266)": ("model", 5),
    f"{THREAD};_run (deepautodnn/serve/predictor.py:150);predict (deepautodnn/serve/predictor.py:71);"
    "prediction_record (deepautodnn/inference/predict.py:32)": ("answer: records and JSON", 6),
    "process 1;main (somewhere/else.py:1)": ("other", 8),
}


def test_each_stack_goes_to_its_innermost_named_phase(tmp_path):
    raw = tmp_path / "server.raw"
    raw.write_text("\n".join(f"{stack} {n}" for stack, (_, n) in STACKS.items()) + "\nnot a stack line\n")
    expected = {phase: n for phase, n in STACKS.values()}
    assert dict(phases(raw, SERVE_PHASES)) == expected


def test_cpu_seconds_grow_with_work():
    import os

    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(os.getpid()) > before
