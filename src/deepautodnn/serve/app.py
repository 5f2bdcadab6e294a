"""The HTTP prediction service: `create_app(model_dir)` builds a FastAPI app; `deepautodnn serve`
runs it with uvicorn.

Endpoints: `POST /v1/predict` (multipart field `files`, one or more images), `POST /v1/similar`
(the same; the nearest catalogue items, when started with an index), `GET /v1/model`,
`GET /livez`, `GET /readyz` (503 until the model is loaded), `GET /metrics` (Prometheus), `GET /`
(a page to try it), and the OpenAPI docs at `/docs`. Every error is JSON `{"detail": "..."}` with
a 4xx status: 401 without the bearer token when one is set, 413 for a body over the cap (refused
as soon as the declared length or the bytes read pass it), 415 for a body that is not
multipart/form-data, 400 for a malformed one, 422 for a missing field or an image that can't be
decoded, 408 for a body that takes longer than the client timeout to arrive; 503 until the model
is ready. Served by `deepautodnn serve`, a client must also send each request's headers within
that timeout (`slow_client_protocol`), so slow clients (slowloris) are cut off instead of holding
connections for ever.

Where each part lives: this module holds the app, its routes, the bearer-token check and the
error answers; `predictor` the loaded model and the micro-batcher; `limits` the body cap and the
client deadlines; `telemetry` the metrics and the JSON access log; `page` the web page.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import secrets
import threading
import time
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import numpy as np

from deepautodnn.utils.extras import require_extra

require_extra("serve", "the HTTP service")  # one line naming the extra, before fastapi's ImportError

import anyio  # noqa: E402  (fastapi's own dependency)
import anyio.to_thread  # noqa: E402
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse, Response  # noqa: E402
from starlette.datastructures import FormData, UploadFile  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402
from starlette.requests import ClientDisconnect  # noqa: E402

from deepautodnn.data.preprocess import ImageError, load_preprocessed  # noqa: E402
from deepautodnn.serve.limits import (  # noqa: E402
    DEFAULT_CLIENT_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    BodyLimit,
    BodyRefused,
    slow_client_protocol,
)
from deepautodnn.serve.page import PAGE  # noqa: E402
from deepautodnn.serve.predictor import MicroBatcher, Predictor  # noqa: E402
from deepautodnn.serve.telemetry import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    MULTIPROCESS_VARIABLE,
    Metrics,
    Observed,
    print_line,
)
from deepautodnn.version import __version__  # noqa: E402

__all__ = [  # what the CLI imports
    "MULTIPROCESS_VARIABLE",
    "SETTINGS_VARIABLE",
    "create_app",
    "is_loopback",
    "slow_client_protocol",
]

MAX_FILES = 64  # images in one request
MAX_FIELDS = 16  # form fields that are not files: the service reads none
MAX_FIELD_BYTES = 64 * 2**10  # the size of each of those


class Service:
    """What the routes share: the bearer token, the metrics, and the model once it has loaded (or
    why it could not)."""

    def __init__(self, model_dir: str | Path, backend: str, token: str | None, index: str | Path | None = None):
        self.model_dir = Path(model_dir)
        self.backend = backend
        self.token = token
        self.index = index
        self.metrics = Metrics(__version__)
        self.predictor: Predictor | None = None
        self.batcher: MicroBatcher | None = None
        self.finder = None  # inference.similar.SimilarFinder, with an index
        self.error: str | None = None

    def load(self, loop: asyncio.AbstractEventLoop) -> None:
        """Load the model (and the index), on any thread, and put it into service on `loop`."""
        start = time.perf_counter()
        try:
            predictor = Predictor(self.model_dir, self.backend)
            if self.index is not None:
                from deepautodnn.inference.similar import SimilarFinder

                self.finder = SimilarFinder(self.model_dir, self.index)
                predictor.info["similar"] = self.finder.info()
        except Exception as err:  # reported by /readyz; the process keeps answering
            self.error = f"{type(err).__name__}: {err}"
            return
        logging.getLogger("uvicorn.error").info(
            "model ready in process %d: preset %s, backend %s, loaded in %.1f s",
            os.getpid(),
            predictor.info["preset"],
            predictor.backend.name,
            time.perf_counter() - start,
        )
        loop.call_soon_threadsafe(self._ready_up, predictor)

    def _ready_up(self, predictor: Predictor) -> None:
        self.batcher = MicroBatcher(predictor, on_batch=self.metrics.observe_batch)  # needs the event loop
        self.predictor = predictor
        self.metrics.model_loaded(predictor.info["preset"], predictor.backend.name, predictor.info["weights_sha256"])
        # The model and libraries are long-lived: keep the cyclic GC from rescanning them under load.
        gc.freeze()

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


@asynccontextmanager
async def lifespan(app: FastAPI, *, in_background: bool):
    """The model loads once, here: on a thread, so that /livez answers at once and /readyz says 503
    until it is ready; or, not `in_background`, before the app takes its first request."""
    service: Service = app.state.service
    loop = asyncio.get_running_loop()
    if in_background:
        threading.Thread(target=service.load, args=(loop,), name="deepautodnn-load", daemon=True).start()
    else:
        service.load(loop)
        await asyncio.sleep(0)  # let _ready_up run
    yield
    # uvicorn sends the lifespan's shutdown only after its connections have drained (or the drain
    # deadline, `serve --drain-seconds`, has passed and it has cancelled what was left), so no
    # request still waits on the batcher here.
    service.close()


# Dependencies, async so that they run on the event loop rather than on a worker thread.


async def authorise(request: Request) -> None:
    """401 unless the request carries the bearer token, when the service has one."""
    token = request.app.state.service.token
    if token is None:
        return
    sent = request.headers.get("authorization", "")
    if not (sent.startswith("Bearer ") and secrets.compare_digest(sent[7:].encode(), token.encode())):
        raise HTTPException(
            401,
            "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def loaded(request: Request) -> Service:
    """The service, once its model is ready; 503 until then, or with the reason it failed to load."""
    service: Service = request.app.state.service
    if service.predictor is None:
        raise HTTPException(503, service.error or "model is still loading")
    return service


@asynccontextmanager
async def multipart_form(request: Request):
    """The request's form, its uploaded files closed afterwards: 415 for a body that is not
    multipart/form-data, 400 for a malformed one. Its size and pace are `BodyLimit`'s to police."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise HTTPException(
            415, f"send images as multipart/form-data (field 'files'), not {kind or 'no content type'!r}"
        )
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except StarletteHTTPException as err:  # Starlette's answer to a multipart body it could not parse
        raise HTTPException(400, f"malformed multipart body ({err.detail})") from None
    except ClientDisconnect:  # nobody is left to answer; not a server error
        raise HTTPException(400, "client disconnected before sending the whole body") from None
    except BodyRefused:  # too large or too slow: BodyLimit answers 413 or 408
        raise
    except Exception as err:  # anything else the parser trips on is still the body's fault, not ours
        raise HTTPException(400, f"malformed multipart body ({type(err).__name__})") from None
    try:
        yield form
    finally:
        await form.close()


def uploaded_files(form: FormData) -> list[UploadFile]:
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not uploads:
        raise HTTPException(422, "no images: send one or more files in the multipart field 'files'")
    return uploads


# Decoding and preprocessing a photo runs on worker threads, off the event loop, so that one large
# photo does not stall every other connection; at most this many at once, so a burst of uploads
# queues instead of spawning a thread each. Pillow's decoders release the GIL. A small upload (a
# 28x28 PNG is 400 bytes) is done inline: that work is mostly Python, which a thread would not
# run in parallel, and the hop there and back would cost more than it saves.
PREPROCESS_THREADS = max(2, os.cpu_count() or 2)
INLINE_PREPROCESS_BYTES = 16 * 2**10
_preprocess_slots: anyio.CapacityLimiter | None = None


def _preprocess_limiter() -> anyio.CapacityLimiter:
    global _preprocess_slots
    if _preprocess_slots is None:  # made on the event loop, when first needed
        _preprocess_slots = anyio.CapacityLimiter(PREPROCESS_THREADS)
    return _preprocess_slots


async def model_inputs(uploads: list[UploadFile], size: int) -> tuple[np.ndarray, list[dict], list[str]]:
    """Each upload through the one preprocessing path: the images (N, size, size) uint8, their
    evidence for unknown-input detection and their names; 422 naming the first that is no image."""
    images, evidence, names = [], [], []
    for upload in uploads:
        name = upload.filename or "upload"
        data = await upload.read()
        prepare = partial(load_preprocessed, data, size, name=name)
        try:
            if len(data) <= INLINE_PREPROCESS_BYTES:
                prepared = prepare()
            else:
                prepared = await anyio.to_thread.run_sync(prepare, limiter=_preprocess_limiter())
        except ImageError as err:
            raise HTTPException(422, str(err)) from None
        images.append(prepared.image)
        evidence.append(prepared.evidence)
        names.append(name)
    return np.stack(images), evidence, names


try:
    import orjson  # in the [serve] extra
except ModuleNotFoundError:
    orjson = None


class FastJSON(JSONResponse):
    """JSON encoded by orjson, several times faster than the json module for the float-heavy
    answers here; the json module where orjson is missing."""

    def render(self, content) -> bytes:
        return orjson.dumps(content) if orjson is not None else super().render(content)


router = APIRouter()


@router.get("/livez")
async def livez():
    return {"status": "alive"}


@router.get("/readyz", dependencies=[Depends(loaded)])
async def readyz():
    return {"status": "ready"}


@router.get("/v1/model", dependencies=[Depends(authorise)])
async def model_info(service: Service = Depends(loaded)):
    return service.predictor.info


@router.post("/v1/predict", dependencies=[Depends(authorise)])
async def predict(request: Request, top_k: int = 3, details: bool = False, service: Service = Depends(loaded)):
    """Classify one or more images sent as multipart form field `files`."""
    n_classes = len(service.predictor.class_names)
    async with multipart_form(request) as form:
        uploads = uploaded_files(form)
        if not 1 <= top_k <= n_classes:
            raise HTTPException(422, f"top_k must be between 1 and {n_classes}")
        images, evidence, names = await model_inputs(uploads, service.predictor.size)
    request.state.images = len(names)  # for the access log
    results = await service.batcher.predict(images, names, top_k, details, evidence)
    return FastJSON({"predictions": results})  # plain JSON types already: skip FastAPI's encoder


MAX_NEIGHBOURS = 100


@router.post("/v1/similar", dependencies=[Depends(authorise)])
async def similar(
    request: Request,
    k: int = 10,
    same_class: bool = False,
    thumbnails: bool = False,
    service: Service = Depends(loaded),
):
    """The k catalogue items nearest each image sent as multipart form field `files`; a query
    flagged unknown gets a note instead of neighbours. `thumbnails=true` adds a small JPEG of each
    (base64), read from the catalogue's files."""
    finder = service.finder
    if finder is None:
        raise HTTPException(
            404, "this service has no catalogue index; start it with `deepautodnn serve MODEL --index FILE`"
        )
    if not 1 <= k <= MAX_NEIGHBOURS:
        raise HTTPException(422, f"k must be between 1 and {MAX_NEIGHBOURS}")
    async with multipart_form(request) as form:
        images, evidence, names = await model_inputs(uploaded_files(form), finder.size)
    request.state.images = len(names)
    results = await anyio.to_thread.run_sync(
        partial(finder.similar, images, names, k=k, same_class=same_class, evidence=evidence)
    )
    if thumbnails:
        from deepautodnn.serve.thumbnails import thumbnail_base64

        items = [n for r in results for n in r["neighbours"]]
        pictures = await anyio.to_thread.run_sync(lambda: [thumbnail_base64(n["file"]) for n in items])
        for item, picture in zip(items, pictures):
            item["thumbnail_jpeg"] = picture
    return FastJSON({"results": results})


@router.get("/metrics", dependencies=[Depends(authorise)], response_class=Response)
async def metrics(request: Request):
    """Prometheus's text format. Behind the token when there is one, like /v1/*: it tells who
    probes the service how much traffic it takes, and which version it runs."""
    return Response(request.app.state.service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse)
async def page():
    return PAGE


async def internal_error(request: Request, err: Exception) -> JSONResponse:
    """A bug: JSON naming the exception's type, never a bare traceback."""
    return JSONResponse({"detail": f"internal error: {type(err).__name__}"}, status_code=500)


def create_app(
    model_dir: str | Path,
    *,
    backend: str = "auto",
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    load_in_background: bool = True,
    client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S,
    json_access_log: bool = False,
    index: str | Path | None = None,
) -> FastAPI:
    """The FastAPI app serving the model in `model_dir` through `backend`; with an `index` (of
    `deepautodnn index build`, from this model's vectors) it also answers /v1/similar. With a `token`, /v1/*
    and /metrics need it as a bearer token. A request body over `max_body_bytes` gets 413, one that
    takes more than `client_timeout_s` to arrive 408. With `json_access_log`, each request is one
    JSON line on stdout (see `telemetry.Observed`). The model loads in the app's lifespan (see `lifespan`)."""
    app = FastAPI(
        title="deepautodnn",
        version=__version__,
        lifespan=partial(lifespan, in_background=load_in_background),
        description="DeepAutoDNN apparel classifier: image in, class probabilities out.",
    )
    app.state.service = Service(model_dir, backend, token, index)
    app.add_exception_handler(Exception, internal_error)
    app.include_router(router)
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes, timeout_s=client_timeout_s)
    app.add_middleware(  # outside BodyLimit, so that its 413 and 408 are counted and logged too
        Observed,
        metrics=app.state.service.metrics,
        routes=frozenset(route.path for route in router.routes),  # the docs pages count as "other"
        access_log=print_line if json_access_log else None,
    )
    return app


SETTINGS_VARIABLE = "DEEPAUTODNN_SERVE_SETTINGS"  # create_app's arguments as JSON, for `serve --workers`


def app_from_environment() -> FastAPI:
    """The app of one `serve --workers N` process: uvicorn imports this factory in each worker, and
    the settings come from the environment the CLI set (`SETTINGS_VARIABLE`)."""
    import json
    import os

    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    use_serving_threads(settings.pop("workers", 1), index=bool(settings.get("index")))
    slow_client_protocol(settings["client_timeout_s"])  # this process's header deadline
    return create_app(**settings)


def use_serving_threads(workers: int, index: bool = False) -> int:
    """Set a serving process's compute threads (torch's, which ONNX Runtime's sessions take too, and
    FAISS's with an `index`) and return them: the cores shared out among `workers` processes, less
    one for each process's event loop, which parses the requests and preprocesses their images while
    the model runs. Every core's worth in each process would oversubscribe them: one worker on 2
    cores answered more requests/s under `ab -c 32` with one compute thread than with two
    (results/serve_profile_steps_avx512-bf16_cpu.json). A positive OMP_NUM_THREADS set by hand is
    kept, in each process (its first level, where it lists several)."""
    import os

    import torch

    from deepautodnn.utils.runtime import usable_cores

    given = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    threads = int(given) if given.isascii() and given.isdigit() else 0
    threads = threads or max(1, usable_cores() // workers - 1)
    torch.set_num_threads(threads)
    if index:
        import faiss

        faiss.omp_set_num_threads(threads)
    return threads


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the service on this machine (then no token is required)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
