"""The loaded model behind the service: `Predictor` (backend, class names, unknown detector, what
/v1/model reports) and `MicroBatcher`, which runs concurrent requests' images through it together."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from deepautodnn.inference.predict import prediction_record, run_with_detection
from deepautodnn.utils.files import read_json, recorded_checksum
from deepautodnn.version import __version__


class Predictor:
    """The loaded model: backend, class names, unknown detector, and what /v1/model reports."""

    def __init__(self, model_dir: str | Path, backend: str):
        # Imported here, on the service's loading thread: they bring in torch, which takes seconds,
        # and /livez answers meanwhile.
        from deepautodnn.inference.backends import make_backend
        from deepautodnn.inference.ood import TwoSignalDetector, UnknownDetector
        from deepautodnn.models.pretrained import resolve_model_dir
        from deepautodnn.models.serialization import METRICS_FILE, WEIGHTS_FILE, load_config

        model_dir = resolve_model_dir(model_dir)  # a folder, or a pretrained name
        cfg = load_config(model_dir)
        self.class_names = list(cfg.model.class_names)
        self.size = cfg.model.image_size
        self.backend = make_backend(model_dir, backend, echo=logging.getLogger("uvicorn.error").info)
        self.detector = UnknownDetector.load(model_dir)
        calibrated_for = self.detector.calibration_for(self.backend.name)[0] if self.detector else None
        if calibrated_for not in (None, self.backend.name):
            logging.getLogger("uvicorn.error").warning(
                "unknown-input detection was not calibrated for the %s backend; using torch's thresholds "
                "(run `deepautodnn calibrate %s`)",
                self.backend.name,
                model_dir,
            )
        if isinstance(self.detector, UnknownDetector):  # fail at load, not on every request
            probe = np.zeros((1, self.size, self.size), np.uint8)
            out = self.backend.run(probe, reconstruction=self.detector.needs_reconstruction)
            self.detector.scores(out, probe, backend=self.backend.name)
        metrics = read_json(model_dir / METRICS_FILE) if (model_dir / METRICS_FILE).exists() else {}
        self.info = {
            "classes": self.class_names,
            "input_shape": [1, self.size, self.size],
            "input": "any image file; see deepautodnn.data.preprocess for how it becomes the model's input",
            "preset": cfg.preset,
            "backend": self.backend.name,
            "unknown_detection": self.detector is not None,
            # Which backend's own scores set the thresholds: the serving one, once calibrated for it.
            "unknown_calibrated_for": calibrated_for,
            "unknown_detector": (
                None
                if self.detector is None
                else "two-signal"
                if isinstance(self.detector, TwoSignalDetector)
                else "fused: " + ", ".join(self.detector.fused_signals)
            ),
            "test_accuracy": metrics.get("accuracy"),
            "weights_sha256": recorded_checksum(model_dir / WEIGHTS_FILE),
            "metrics": {k: metrics[k] for k in ("accuracy", "macro", "n", "data") if k in metrics},
            "deepautodnn_version": __version__,
        }

    def predict(
        self, images: np.ndarray, names: list[str], top_k: int, details: bool, evidence: list[dict] | None = None
    ) -> list[dict]:
        outputs, scores = run_with_detection(self.backend, self.detector, images, evidence, reconstruction=details)
        recon = outputs.recon
        out = []
        for i, (name, p) in enumerate(zip(names, outputs.proba)):
            item = prediction_record(name, p, self.class_names, top_k, None if scores is None else scores[i])
            item["probabilities"] = {c: float(v) for c, v in zip(self.class_names, p)}
            if details:
                item["input_png"] = _png_base64(images[i])
                item["reconstruction_png"] = _png_base64(np.clip(recon[i] * 255.0 + 0.5, 0, 255).astype(np.uint8))
            out.append(item)
        return out


class MicroBatcher:
    """Runs concurrent requests' images through the model together.

    Each request puts its images and a future on a queue; one task takes whatever is waiting
    (up to `max_images`, waiting at most `max_wait_s` for more once it has one), runs one forward
    pass on a worker thread, and hands each request back exactly its own rows, in order.
    `on_batch`, if given, gets each pass's answers, on that thread (the service's metrics).
    """

    def __init__(
        self,
        predictor: Predictor,
        max_images: int = 256,
        max_wait_s: float = 0.002,
        on_batch: Callable[[list[dict]], None] | None = None,
    ):
        self.predictor = predictor
        self.max_images = max_images
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def predict(
        self, images: np.ndarray, names: list[str], top_k: int, details: bool, evidence: list[dict] | None = None
    ) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, names, top_k, details, evidence, future))
        return await future

    def close(self) -> None:
        self.task.cancel()

    async def _loop(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while sum(len(item[0]) for item in batch) < self.max_images:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            try:
                outputs = await run_in_threadpool(self._run, batch)
            except Exception as err:  # surfaces in each waiting request, never kills the loop
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (*_, future), output in zip(batch, outputs):
                if not future.done():
                    future.set_result(output)

    def _run(self, batch: list[tuple]) -> list[list[dict]]:
        images = np.concatenate([item[0] for item in batch])  # (sum of N_i, H, W)
        names = [name for item in batch for name in item[1]]
        top_k = max(item[2] for item in batch)
        details = any(item[3] for item in batch)
        evidence = None if any(item[4] is None for item in batch) else [e for item in batch for e in item[4]]
        results = self.predictor.predict(images, names, top_k, details, evidence)
        if self.on_batch is not None:
            self.on_batch(results)
        out, start = [], 0
        for item_images, _, k, want_details, _, _ in batch:
            mine = results[start : start + len(item_images)]
            start += len(item_images)
            for r in mine:
                r["top_k"] = r["top_k"][:k]
                if not want_details:
                    r.pop("input_png", None)
                    r.pop("reconstruction_png", None)
            out.append(mine)
        return out


def _png_base64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()
