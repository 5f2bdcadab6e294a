"""What ONNX Runtime's thread spinning costs and buys, on the path `predict` and `serve` run. Prints JSON.

ONNX Runtime's intra-op threads keep spinning for a while after a run, waiting for the next one.
That pays when runs follow each other with nothing in between, and costs when something else needs
the cores right after a run: here, the unknown-input detector's arithmetic in torch. Three session
settings are compared: ORT's default (spinning), spinning stopped once a run returns (what
`OnnxBackend` uses, `session.force_spinning_stop`), and no spinning at all. For each, on Fashion-MNIST
test images:

- the model alone, one image at a time in a loop (what `bench --what infer` times), p50;
- the model alone at batch 64, images/s;
- the service's `Predictor.predict` (model, detection, records) at batch 1, 4 and 16, mean ms.

    python benchmarks/ort_spinning.py MODEL_DIR [--backend onnx-int8] --out results/ort_spinning_cpu.json
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from _emit import emit_json, provenance
from PIL import Image

from deepautodnn import load_fashion_mnist
from deepautodnn.data.preprocess import load_preprocessed
from deepautodnn.inference.backends import OnnxBackend
from deepautodnn.utils.runtime import machine_info

SETTINGS = {  # name: session config entries
    "spinning (ORT's default)": {"session.force_spinning_stop": "0"},
    "spinning stopped when a run returns (used)": {"session.force_spinning_stop": "1"},
    "no spinning": {"session.intra_op.allow_spinning": "0"},
}


def measure(model_dir: str, backend: str, images: np.ndarray, calls: int) -> dict:
    from deepautodnn.serve.predictor import Predictor

    predictor = Predictor(model_dir, backend)
    run = predictor.backend.run
    one = images[:1]
    for _ in range(200):
        run(one, reconstruction=False)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(one, reconstruction=False)
        times.append(time.perf_counter() - start)
    batch = images[:64]
    start = time.perf_counter()
    for _ in range(calls // 20):
        run(batch, reconstruction=False)
    rate = 64 * (calls // 20) / (time.perf_counter() - start)
    prepared = [load_preprocessed(png(a), images.shape[-1], name="test image") for a in images[:16]]
    inputs, evidence = np.stack([p.image for p in prepared]), [p.evidence for p in prepared]
    predict_ms = {}
    for n in (1, 4, 16):
        for _ in range(30):
            predictor.predict(inputs[:n], ["x"] * n, 1, False, evidence[:n])
        start = time.perf_counter()
        for _ in range(calls // 10):
            predictor.predict(inputs[:n], ["x"] * n, 1, False, evidence[:n])
        predict_ms[str(n)] = round((time.perf_counter() - start) / (calls // 10) * 1000, 3)
    return {
        "backend": predictor.backend.name,
        "model_batch1_p50_ms": round(statistics.median(times) * 1000, 4),
        "model_batch64_images_per_s": round(rate),
        "predict_with_detection_ms": predict_ms,
    }


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--backend", default="onnx-int8", choices=["onnx", "onnx-int8"])
    parser.add_argument("--calls", type=int, default=3000, help="batch-1 calls timed per setting")
    parser.add_argument("--out")
    args = parser.parse_args()
    images, _ = load_fashion_mnist("test")
    results = {}
    for name, entries in SETTINGS.items():
        OnnxBackend.SESSION_CONFIG = entries  # the sessions made from here on take these instead
        results[name] = {"session_config": entries, **measure(args.model_dir, args.backend, images[:64], args.calls)}
    emit_json(
        {"benchmark": "ort_spinning", **provenance(), "seeds": [0], "settings": results, "machine": machine_info()},
        args.out,
    )


if __name__ == "__main__":
    main()
