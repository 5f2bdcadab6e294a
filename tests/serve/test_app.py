"""The HTTP service: every endpoint, the 4xx answers, readiness, the token; a serving process's
modules, its workers, and its drain on SIGTERM."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

warnings.filterwarnings("ignore", message=".*httpx.*")  # starlette's TestClient notice
from fastapi.testclient import TestClient  # noqa: E402

from deepautodnn import cli, load_model  # noqa: E402
from deepautodnn.experiments.http_load import (  # noqa: E402
    BOUNDARY,
    drain_under_load,
    http_request,
    multipart_body,
    multipart_file_head,
    running_server,
)
from deepautodnn.inference.evaluate import predict_proba  # noqa: E402
from deepautodnn.serve.app import create_app  # noqa: E402
from tests.helpers.gated import gate_model_loading  # noqa: E402
from tests.helpers.models import png  # noqa: E402
from tests.helpers.prometheus import metric  # noqa: E402

SERVE_RECORDING_MODULES = Path(__file__).parents[1] / "helpers" / "serve_recording_modules.py"
TRAINER = ("deepautodnn.training", "deepautodnn.experiments", "deepautodnn.estimator")


@pytest.fixture(scope="module")
def client(tiny_run):
    run_dir, _ = tiny_run
    with TestClient(create_app(run_dir, load_in_background=False, max_body_bytes=2**20)) as c:
        yield c


def test_health_model_and_docs(client, tiny_run):
    assert client.get("/livez").json() == {"status": "alive"}
    assert client.get("/readyz").status_code == 200
    info = client.get("/v1/model").json()
    assert info["classes"][0] == "T-shirt/top" and info["input_shape"] == [1, 28, 28]
    assert info["unknown_detection"] is True and info["backend"] == "torch"
    assert info["test_accuracy"] == tiny_run[1]["accuracy"]
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert 'id="file"' in client.get("/").text


def test_predict_matches_in_memory_predictions(client, tiny_run, test_images):
    images, _ = test_images
    files = [("files", (f"{i}.png", png(images[i]), "image/png")) for i in range(5)]
    r = client.post("/v1/predict", files=files, params={"top_k": 2, "details": True})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    expected = predict_proba(load_model(tiny_run[0]), images[:5])
    for i, p in enumerate(preds):
        assert p["file"] == f"{i}.png" and p["label_index"] == int(expected[i].argmax())
        assert abs(p["probability"] - expected[i].max()) < 1e-5
        assert len(p["top_k"]) == 2 and abs(sum(p["probabilities"].values()) - 1) < 1e-4
        assert isinstance(p["unknown"], bool) and p["unknown_score"] >= 0
        assert Image.open(io.BytesIO(base64.b64decode(p["input_png"]))).size == (28, 28)
        assert Image.open(io.BytesIO(base64.b64decode(p["reconstruction_png"]))).size == (28, 28)


def test_the_reconstruction_is_computed_only_for_details(client, test_images, monkeypatch):
    """Without details=true the backend runs without its reconstruction, and the answer has none."""
    backend = client.app.state.service.predictor.backend
    asked = []
    run = backend.run
    monkeypatch.setattr(
        backend, "run", lambda images, reconstruction=True: asked.append(reconstruction) or run(images, reconstruction)
    )
    files = [("files", ("a.png", png(test_images[0][0]), "image/png"))]
    plain = client.post("/v1/predict", files=files).json()["predictions"][0]
    detailed = client.post("/v1/predict", files=files, params={"details": True}).json()["predictions"][0]
    assert asked == [False, True]
    assert "reconstruction_png" not in plain and "reconstruction_png" in detailed
    assert plain["probabilities"] == detailed["probabilities"]


def test_a_large_photo_is_preprocessed_off_the_event_loop_with_the_same_answer(client, test_images):
    from deepautodnn.serve import app as app_module

    rng = np.random.default_rng(0)
    garment = Image.fromarray(test_images[0][3]).resize((600, 600))
    photo = np.clip(np.asarray(garment.convert("RGB"), np.float64) + rng.normal(0, 3, (600, 600, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(photo.astype(np.uint8)).save(buf, "PNG")
    assert len(buf.getvalue()) > app_module.INLINE_PREPROCESS_BYTES  # takes the thread-pool path
    files = [("files", ("big.png", buf.getvalue(), "image/png"))]
    r = client.post("/v1/predict", files=files, params={"top_k": 1})
    assert r.status_code == 200
    from deepautodnn.data.preprocess import load_preprocessed

    inline = load_preprocessed(buf.getvalue(), 28, name="big.png").image
    expected = predict_proba(load_model(client.app.state.service.model_dir), inline[None])
    assert r.json()["predictions"][0]["label_index"] == int(expected.argmax())


def test_answers_are_the_same_json_with_or_without_orjson(monkeypatch):
    from deepautodnn.serve import app as app_module
    from deepautodnn.serve.app import FastJSON

    content = {"predictions": [{"label": "Bag", "probability": 0.1 + 0.2, "top_k": [1, 2]}]}
    fast = FastJSON(content).body
    monkeypatch.setattr(app_module, "orjson", None)  # as if it were not installed
    plain = FastJSON(content).body
    assert json.loads(fast) == json.loads(plain) == content


@pytest.mark.parametrize(
    "kwargs,status,message",
    [
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "multipart/form-data"),
        ({"files": [("files", ("x.png", b"not an image", "image/png"))]}, 422, "x.png: not an image file"),
        ({"files": [("files", ("x.png", b"", "image/png"))]}, 422, "x.png: empty file"),
        ({"files": [("other", ("x.png", b"abc", "image/png"))]}, 422, "no images"),
        ({"files": [("files", ("big.png", b"0" * (2**20 + 10), "image/png"))]}, 413, "over the limit"),
    ],
)
def test_bad_requests_are_4xx_with_a_json_reason(client, kwargs, status, message):
    r = client.post("/v1/predict", **kwargs)
    assert r.status_code == status and message in r.json()["detail"]


def test_body_cap_holds_without_a_declared_length(client):
    def chunks():
        yield multipart_file_head()  # well formed, so that only the limit stops the server reading
        for _ in range(40):
            yield b"y" * 65536  # 2.5 MiB streamed, no Content-Length

    kind = f"multipart/form-data; boundary={BOUNDARY}"
    r = client.post("/v1/predict", content=chunks(), headers={"content-type": kind})
    assert r.status_code == 413 and r.json()["detail"] == "request body is over the limit of 1048576 bytes"
    assert r.headers["connection"] == "close"


def test_token_is_required_when_set(tiny_run, test_images):
    images, _ = test_images
    with TestClient(create_app(tiny_run[0], token="s3cret", load_in_background=False)) as c:
        files = [("files", ("a.png", png(images[0]), "image/png"))]
        assert c.post("/v1/predict", files=files).status_code == 401
        assert c.post("/v1/predict", files=files, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/predict", files=files, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/livez").status_code == 200  # health stays open


def test_not_ready_until_loaded(tiny_run, monkeypatch):
    gate = gate_model_loading(monkeypatch)
    with TestClient(create_app(tiny_run[0])) as c:
        assert c.get("/livez").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert c.post("/v1/predict", files=[("files", ("a.png", b"x", "image/png"))]).status_code == 503
        gate.set()
        for _ in range(100):
            if c.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert c.get("/readyz").status_code == 200


def test_serve_refuses_a_public_address_without_a_token(tiny_run, capsys, monkeypatch):
    monkeypatch.delenv("DEEPAUTODNN_TOKEN", raising=False)
    assert cli.main(["serve", str(tiny_run[0]), "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_a_serving_process_does_not_load_the_trainer(tiny_run, test_images, tmp_path):
    """The real `deepautodnn serve`, in a process of its own, after answering a prediction: nothing
    of training, the experiments or the estimator is in its sys.modules."""
    modules_file = tmp_path / "modules.txt"
    command = (sys.executable, str(SERVE_RECORDING_MODULES), str(modules_file))
    with running_server(tiny_run[0], command=command) as (server, port):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict",
            data=multipart_body([png(test_images[0][0])]),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200 and len(json.load(r)["predictions"]) == 1
        server.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not modules_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    modules = modules_file.read_text().split()
    assert {"deepautodnn.serve.app", "deepautodnn.inference.backends", "torch"} <= set(modules)  # it served
    trainer = [m for m in modules if any(m == t or m.startswith(t + ".") for t in TRAINER)]
    assert trainer == [], f"a serving process loaded {trainer}"


def test_serve_with_two_workers_answers_correctly(tiny_run, test_images):
    """`serve --workers 2`: two processes share the port, each loads its own model once, they
    answer, and /metrics, whichever worker answers it, counts both workers' images."""
    images = test_images[0][:4]
    expected = predict_proba(load_model(tiny_run[0]), images).argmax(1).tolist()
    with running_server(tiny_run[0], "--workers", "2", ready_timeout=120) as (server, port):
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
        if children.exists():  # Linux: the two workers (and multiprocessing's helper) are its children
            assert len(children.read_text().split()) >= 2
        labels = []
        for image in images:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/predict?top_k=1",
                data=multipart_body([png(image)]),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            )
            deadline = time.monotonic() + 120
            while True:  # running_server saw one worker ready; the other may still be loading (503)
                try:
                    with urllib.request.urlopen(request, timeout=60) as r:
                        labels.append(json.load(r)["predictions"][0]["label_index"])
                    break
                except urllib.error.HTTPError as err:
                    if err.code != 503 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        for _ in range(6):  # the kernel hands each connection to either worker
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                assert metric(r.read().decode(), "deepautodnn_images_classified_total") == len(images)
    assert labels == expected
    loaded_in = re.findall(r"model ready in process (\d+)", server.stderr.read().decode())
    assert len(loaded_in) == 2 and len(set(loaded_in)) == 2, loaded_in  # once in each worker


@pytest.mark.parametrize(
    ("cores", "workers", "omp", "threads"),
    [
        (2, 1, None, 1),
        (2, 2, None, 1),
        (8, 1, None, 7),
        (8, 2, None, 3),
        (1, 1, None, 1),
        (8, 1, "2", 2),  # set by hand: kept, in each worker
        (8, 2, "2", 2),
        (8, 1, "4,2", 4),  # nested levels: the first
        (8, 1, "0", 7),  # not a thread count: ours
        (8, 1, "abc", 7),
        (8, 1, "²", 7),
    ],
)
def test_serving_threads_leave_each_event_loop_a_core(monkeypatch, cores, workers, omp, threads):
    import torch

    import deepautodnn.utils.runtime as runtime
    from deepautodnn.serve.app import use_serving_threads

    monkeypatch.setattr(runtime, "usable_cores", lambda: cores)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    before = torch.get_num_threads()
    try:
        assert use_serving_threads(workers) == threads
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_serve_refuses_zero_workers(tiny_run, capsys):
    assert cli.main(["serve", str(tiny_run[0]), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_serve_options_reach_uvicorn(tiny_run, monkeypatch, capsys):
    """--drain-seconds and --access-log, as uvicorn and the app get them; and the compute threads
    set before the server starts (one core left to the event loop)."""
    import torch
    import uvicorn

    from deepautodnn.utils.runtime import usable_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs, torch.get_num_threads())))
    sigterm = signal.getsignal(signal.SIGTERM)
    for access_log in ("text", "json", "off"):
        assert cli.main(["serve", str(tiny_run[0]), "--access-log", access_log, "--drain-seconds", "5"]) == 0
    assert signal.getsignal(signal.SIGTERM) is sigterm  # serve's own handler is gone once it has returned
    assert [kwargs["timeout_graceful_shutdown"] for _, kwargs, _ in calls] == [5, 5, 5]
    assert [kwargs["access_log"] for _, kwargs, _ in calls] == [True, False, False]  # uvicorn's text log
    assert {threads for *_, threads in calls} == {max(1, usable_cores() - 1)}
    json_lines = []
    for app, _, _ in calls:
        capsys.readouterr()
        TestClient(app).get("/livez")  # no lifespan: the model is not needed for /livez
        json_lines.append(capsys.readouterr().out.count('"path": "/livez"'))
    assert json_lines == [0, 1, 0]


def test_serve_refuses_a_negative_drain(tiny_run, capsys):
    assert cli.main(["serve", str(tiny_run[0]), "--drain-seconds", "-1"]) == 2
    assert "--drain-seconds" in capsys.readouterr().err


def test_sigterm_under_load_drains_every_request_the_service_took_in(tiny_run, test_images, tmp_path):
    """The real `deepautodnn serve`, 16 clients each sending request after request on new
    connections, SIGTERM in the middle: the server stops accepting, answers every request it had
    taken in (200), and exits 0. One request, its body half sent at SIGTERM, is finished after the
    server has stopped accepting: it still gets its answer, from the micro-batcher.

    A connection still in the kernel's queue when the listener closes (or one uvicorn has accepted
    but not yet read) is reset: that request never reached the service, and its access log proves
    it: it lists exactly the requests the clients got answers to."""
    requests = [http_request("/v1/predict?top_k=1", multipart_body([png(image)])) for image in test_images[0][:16]]
    access_log = tmp_path / "access.jsonl"
    serve_args = ("--access-log", "json", "--drain-seconds", "10")
    with access_log.open("wb") as log, running_server(tiny_run[0], *serve_args, stdout=log) as (server, port):
        slow = socket.create_connection(("127.0.0.1", port), timeout=30)
        slow_request = requests[0]
        slow.sendall(slow_request[:-100])  # headers and most of the body: under way when SIGTERM comes
        answer = {}

        def finish_slow_request() -> None:
            time.sleep(2.5)  # SIGTERM goes at 1.5 s; uvicorn looks for it every 0.1 s
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                answer["listening"] = True  # the listener should be closed by now
            except ConnectionRefusedError:
                answer["listening"] = False
            slow.sendall(slow_request[-100:])
            response = http.client.HTTPResponse(slow)
            response.begin()
            answer.update(status=response.status, connection=response.getheader("connection"), body=response.read())

        finisher = threading.Thread(target=finish_slow_request)
        finisher.start()
        drain = drain_under_load(server, port, requests, clients=16, load_s=1.5, exit_timeout=20)
        finisher.join(30)
        slow.close()
    assert drain.exit_code == 0, server.stderr.read().decode()[-2000:]
    assert answer["listening"] is False
    assert answer["status"] == 200 and answer["connection"] == "close", answer
    assert len(json.loads(answer["body"])["predictions"]) == 1
    assert drain.refused == 16  # every client ended at a refused connection
    assert len(drain.statuses) > 50 and set(drain.statuses) == {200}
    logged = [json.loads(line) for line in access_log.read_text().splitlines()]
    predictions = [r for r in logged if r["path"] == "/v1/predict"]
    assert {r["status"] for r in predictions} == {200}  # none cut off (it would log 500)
    assert len(predictions) == len(drain.statuses) + 1  # the clients' answers and the slow request's
