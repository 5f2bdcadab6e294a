"""The HTTP prediction service: `create_app(model_dir)` builds a FastAPI app; `deepautodnn serve`
runs it with uvicorn.

Endpoints: `POST /v1/predict` (multipart field `files`, one or more images), `GET /v1/model`,
`GET /livez`, `GET /readyz` (503 until the model is loaded), `GET /` (a page to try it), and the
OpenAPI docs at `/docs`. Every error is JSON `{"detail": "..."}` with a 4xx status: 401 without
the bearer token when one is set, 413 for a body over the cap (refused as soon as the declared
length or the bytes read pass it), 415 for a body that is not multipart/form-data, 422 for a
missing field or an image that can't be decoded, 408 for a body that takes longer than the
client timeout to arrive. Served by `deepautodnn serve`, a client must also send each request's
headers within that timeout (`slow_client_protocol`), so slow clients (slowloris) are cut off
instead of holding connections for ever.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import secrets
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np

from deepautodnn.utils.extras import require_extra

require_extra("serve", "the HTTP service")  # one line naming the extra, before fastapi's ImportError

from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi.concurrency import run_in_threadpool  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse  # noqa: E402
from starlette.requests import ClientDisconnect  # noqa: E402

DEFAULT_MAX_BODY_BYTES = 10 * 2**20
DEFAULT_CLIENT_TIMEOUT_S = 15.0  # for a request's headers, and again for its body
MAX_FILES = 64
CLOSE = {"Connection": "close"}  # for answers sent before the body was read: the rest of it is not wanted


class Predictor:
    """The loaded model: backend, class names, unknown detector, and what /v1/model reports."""

    def __init__(self, model_dir: str | Path, backend: str):
        from deepautodnn.inference.backends import make_backend
        from deepautodnn.inference.ood import TwoSignalDetector, UnknownDetector
        from deepautodnn.models.serialization import METRICS_FILE, load_config
        from deepautodnn.utils.files import read_json
        from deepautodnn.version import __version__

        model_dir = Path(model_dir)
        cfg = load_config(model_dir)
        self.class_names = list(cfg.model.class_names)
        self.size = cfg.model.image_size
        self.backend = make_backend(model_dir, backend)
        self.detector = UnknownDetector.load(model_dir)
        calibrated_for = self.detector.calibration_for(self.backend.name)[0] if self.detector else None
        if calibrated_for not in (None, self.backend.name):
            import logging

            logging.getLogger("uvicorn.error").warning(
                "unknown-input detection was not calibrated for the %s backend; using torch's thresholds "
                "(run `deepautodnn calibrate %s`)",
                self.backend.name,
                model_dir,
            )
        if isinstance(self.detector, UnknownDetector):  # fail at load, not on every request
            probe = np.zeros((1, self.size, self.size), np.uint8)
            self.detector.scores(self.backend.run(probe), probe, backend=self.backend.name)
        metrics = read_json(model_dir / METRICS_FILE) if (model_dir / METRICS_FILE).exists() else {}
        self.info = {
            "classes": self.class_names,
            "input_shape": [1, self.size, self.size],
            "input": "any image file; see deepautodnn.preprocess for how it becomes the model's input",
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
            "metrics": {k: metrics[k] for k in ("accuracy", "macro", "n", "data") if k in metrics},
            "deepautodnn_version": __version__,
        }

    def predict(
        self, images: np.ndarray, names: list[str], top_k: int, details: bool, evidence: list[dict] | None = None
    ) -> list[dict]:
        from deepautodnn.inference.predict import prediction_record, run_with_detection

        outputs, scores = run_with_detection(self.backend, self.detector, images, evidence)
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
    """

    def __init__(self, predictor: Predictor, max_images: int = 256, max_wait_s: float = 0.002):
        self.predictor = predictor
        self.max_images = max_images
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def predict(
        self, images: np.ndarray, names: list[str], top_k: int, details: bool, evidence: list[dict] | None = None
    ) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, names, top_k, details, evidence, future))
        return await future

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

    def _run(self, batch) -> list[list[dict]]:
        images = np.concatenate([item[0] for item in batch])  # (sum of N_i, H, W)
        names = [name for item in batch for name in item[1]]
        top_k = max(item[2] for item in batch)
        details = any(item[3] for item in batch)
        evidence = None if any(item[4] is None for item in batch) else [e for item in batch for e in item[4]]
        results = self.predictor.predict(images, names, top_k, details, evidence)
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
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def create_app(
    model_dir: str | Path,
    *,
    backend: str = "auto",
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    load_in_background: bool = True,
    client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S,
):
    """The FastAPI app. The model loads once, in the app's lifespan, on a background thread so that
    /livez answers at once and /readyz says 503 until it is ready. A request body that takes more
    than `client_timeout_s` to arrive gets 408."""
    from deepautodnn.data.preprocess import ImageError, load_preprocessed
    from deepautodnn.serve.page import PAGE

    state: dict = {"predictor": None, "batcher": None, "error": None}

    def load() -> None:
        try:
            predictor = Predictor(model_dir, backend)
        except Exception as err:  # reported by /readyz; the process keeps answering
            state["error"] = f"{type(err).__name__}: {err}"
            return
        loop.call_soon_threadsafe(ready_up, predictor)

    def ready_up(predictor: Predictor) -> None:
        state["batcher"] = MicroBatcher(predictor)  # needs the event loop, so made on it
        state["predictor"] = predictor
        # The model and libraries are long-lived: keep the cyclic GC from rescanning them under load.
        gc.freeze()

    @asynccontextmanager
    async def lifespan(app):
        nonlocal loop
        loop = asyncio.get_running_loop()
        if load_in_background:
            threading.Thread(target=load, name="deepautodnn-load", daemon=True).start()
        else:
            load()
            await asyncio.sleep(0)  # let ready_up run
        yield
        if state["batcher"] is not None:
            state["batcher"].task.cancel()

    loop = None

    app = FastAPI(
        title="deepautodnn",
        version=_version(),
        lifespan=lifespan,
        description="DeepAutoDNN apparel classifier: image in, class probabilities out.",
    )

    def authorise(request: Request) -> None:
        if token is None:
            return
        sent = request.headers.get("authorization", "")
        if not (sent.startswith("Bearer ") and secrets.compare_digest(sent[7:].encode(), token.encode())):
            raise HTTPException(
                401,
                "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def ready() -> Predictor:
        if state["predictor"] is None:
            raise HTTPException(503, state["error"] or "model is still loading")
        return state["predictor"]

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):  # a bug, never a bare traceback
        return JSONResponse({"detail": f"internal error: {type(err).__name__}"}, status_code=500)

    @app.get("/livez")
    def livez():
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz():
        ready()
        return {"status": "ready"}

    @app.get("/v1/model")
    def model_info(request: Request):
        authorise(request)
        return ready().info

    @app.post("/v1/predict")
    async def predict(request: Request, top_k: int = 3, details: bool = False):
        """Classify one or more images sent as multipart form field `files`."""
        authorise(request)
        predictor = ready()
        kind = request.headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            raise HTTPException(
                415, f"send images as multipart/form-data (field 'files'), not {kind or 'no content type'!r}"
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPException(
                413, f"request body of {int(declared)} bytes is over the limit of {max_body_bytes}", headers=CLOSE
            )
        body = bytearray()
        chunks = request.stream().__aiter__()
        deadline = asyncio.get_running_loop().time() + client_timeout_s
        while True:  # counted as it arrives: a lying length can't get past; timed: a slow one can't hold on
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), deadline - asyncio.get_running_loop().time())
            except StopAsyncIteration:
                break
            except ClientDisconnect:  # nobody is left to answer; not a server error
                raise HTTPException(400, "client disconnected before sending the whole body") from None
            except asyncio.TimeoutError:
                raise HTTPException(
                    408, f"request body took longer than {client_timeout_s:g} s to arrive", headers=CLOSE
                ) from None
            body += chunk
            if len(body) > max_body_bytes:
                raise HTTPException(413, f"request body is over the limit of {max_body_bytes} bytes", headers=CLOSE)
        request._body = bytes(body)  # let Starlette parse the form from what was read
        try:
            form = await request.form(max_files=MAX_FILES)
        except Exception as err:  # malformed multipart
            raise HTTPException(400, f"malformed multipart body ({err})") from None
        uploads = [f for f in form.getlist("files") if hasattr(f, "read")]
        if not uploads:
            raise HTTPException(422, "no images: send one or more files in the multipart field 'files'")
        if not 1 <= top_k <= len(predictor.class_names):
            raise HTTPException(422, f"top_k must be between 1 and {len(predictor.class_names)}")
        images, evidence, names = [], [], []
        for upload in uploads:
            name = upload.filename or "upload"
            try:
                prepared = load_preprocessed(await upload.read(), predictor.size, name=name)
            except ImageError as err:
                raise HTTPException(422, str(err)) from None
            images.append(prepared.image)
            evidence.append(prepared.evidence)
            names.append(name)
        results = await state["batcher"].predict(np.stack(images), names, top_k, details, evidence)
        return JSONResponse({"predictions": results})  # plain JSON types already: skip FastAPI's encoder

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE

    return app


def slow_client_protocol(timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S):
    """uvicorn's h11 protocol, plus a deadline on request headers: they must all arrive within
    `timeout_s` of the connection opening or finishing its last response, else it is closed.
    (uvicorn alone times out idle kept-alive connections, but not one trickling a header.)"""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineH11Protocol(H11Protocol):
        _header_timer = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the headers are in: the body has its own deadline
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers on this kept-alive connection

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineH11Protocol


def _version() -> str:
    from deepautodnn.version import __version__

    return __version__


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
