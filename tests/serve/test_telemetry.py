"""serve/telemetry.py: GET /metrics and the JSON access log, on the app in-process. The access log of a
real `deepautodnn serve`, and its metrics summed over workers, are tests/serve/test_app.py's."""

from __future__ import annotations

import json
import threading
import warnings
from datetime import datetime

import numpy as np

warnings.filterwarnings("ignore", message=".*httpx.*")  # starlette's TestClient notice
from fastapi.testclient import TestClient  # noqa: E402

from deepautodnn.serve.app import create_app  # noqa: E402
from deepautodnn.version import __version__  # noqa: E402
from tests.helpers.gated import gate_model_loading  # noqa: E402
from tests.helpers.models import png  # noqa: E402
from tests.helpers.prometheus import metric  # noqa: E402


def test_metrics_count_requests_images_batches_and_unknown_inputs(tiny_run, test_images):
    garments = test_images[0][:2]
    noise = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)  # likely flagged unknown
    files = [("files", (f"{i}.png", png(image), "image/png")) for i, image in enumerate([*garments, *noise])]
    with TestClient(create_app(tiny_run[0], load_in_background=False)) as c:
        predictions = c.post("/v1/predict", files=files).json()["predictions"]
        assert c.post("/v1/predict", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
        assert c.get("/no/such/page").status_code == 404
        r = c.get("/metrics")
        preset = c.get("/v1/model").json()["preset"]
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    text = r.text
    assert metric(text, "deepautodnn_http_requests_total", route="/v1/predict", status="200") == 1
    assert metric(text, "deepautodnn_http_requests_total", route="/v1/predict", status="415") == 1
    assert metric(text, "deepautodnn_http_requests_total", route="other", status="404") == 1  # any unknown path
    assert metric(text, "deepautodnn_http_request_duration_seconds_count", route="/v1/predict") == 2
    assert metric(text, "deepautodnn_images_classified_total") == 4
    assert metric(text, "deepautodnn_images_unknown_total") == sum(p["unknown"] for p in predictions)
    assert metric(text, "deepautodnn_batch_images_count") == 1 and metric(text, "deepautodnn_batch_images_sum") == 4
    weights = (tiny_run[0] / "model.safetensors.sha256").read_text().split()[0][:12]
    assert (
        metric(text, "deepautodnn_model_info", version=__version__, preset=preset, backend="torch", model=weights) == 1
    )
    assert metric(text, "process_resident_memory_bytes") > 0


def test_each_app_counts_apart(tiny_run):
    with TestClient(create_app(tiny_run[0], load_in_background=False)) as a:
        with TestClient(create_app(tiny_run[0], load_in_background=False)) as b:
            for _ in range(3):
                a.get("/livez")
            b.get("/livez")
            assert metric(a.get("/metrics").text, "deepautodnn_http_requests_total", route="/livez") == 3
            assert metric(b.get("/metrics").text, "deepautodnn_http_requests_total", route="/livez") == 1


def test_metrics_need_the_token_when_there_is_one(tiny_run):
    with TestClient(create_app(tiny_run[0], token="s3cret", load_in_background=False)) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_metrics_answer_while_the_model_loads(tiny_run, monkeypatch):
    gate = gate_model_loading(monkeypatch)
    with TestClient(create_app(tiny_run[0])) as c:
        loading = c.get("/metrics")
        gate.set()
        for _ in range(200):
            if c.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.05)
        loaded = c.get("/metrics")
    assert loading.status_code == 200 and metric(loading.text, "deepautodnn_model_info") is None
    assert metric(loaded.text, "deepautodnn_model_info", backend="torch") == 1


def test_json_access_log_is_one_object_per_request(tiny_run, test_images, capsys):
    files = [("files", (f"{i}.png", png(test_images[0][i]), "image/png")) for i in range(2)]
    too_big = [("files", ("big.png", b"0" * 8192, "image/png"))]
    with TestClient(create_app(tiny_run[0], load_in_background=False, max_body_bytes=4096, json_access_log=True)) as c:
        capsys.readouterr()
        assert c.post("/v1/predict", files=files).status_code == 200
        assert c.post("/v1/predict", files=too_big).status_code == 413
        assert c.get("/livez").status_code == 200
        out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["method"], r["path"], r["status"], r["images"]) for r in records] == [
        ("POST", "/v1/predict", 200, 2),
        ("POST", "/v1/predict", 413, 0),
        ("GET", "/livez", 200, 0),
    ]
    for r in records:
        assert set(r) == {"time", "method", "path", "status", "duration_ms", "client", "images"}
        assert r["duration_ms"] > 0 and r["client"] == "testclient"
        assert datetime.fromisoformat(r["time"]).utcoffset().total_seconds() == 0


def test_no_access_log_lines_from_the_app_by_default(tiny_run, capsys):
    with TestClient(create_app(tiny_run[0], load_in_background=False)) as c:
        capsys.readouterr()
        c.get("/livez")
        assert capsys.readouterr().out == ""
