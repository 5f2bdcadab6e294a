"""ONNX export (inference/export.py): parity with PyTorch, the int8 file, the backend choice it
records, and every backend against torch float32; the service and `predict` on the exported file."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

warnings.filterwarnings("ignore", message=".*httpx.*")  # starlette's TestClient notice
from fastapi.testclient import TestClient  # noqa: E402

from deepautodnn import cli, load_model  # noqa: E402
from deepautodnn.inference.evaluate import predict_proba  # noqa: E402
from deepautodnn.inference.export import INT8_MAX_ACCURACY_DROP  # noqa: E402
from deepautodnn.serve.app import create_app  # noqa: E402
from tests.helpers.models import png  # noqa: E402


def test_onnx_export_parity_and_backend(tiny_run, tmp_path, test_images, capsys):
    from deepautodnn.inference.export import onnx_parity

    images, _ = test_images
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run[0], model_dir)
    assert cli.main(["export", str(model_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 1000
    parity = onnx_parity(model_dir, model_dir / "model.onnx", images[:1000])
    assert parity["argmax_agreement"] == 1.0 and parity["max_abs_diff_probabilities"] < 1e-4
    # A larger batch than the export example: the batch axis is dynamic.
    with TestClient(create_app(model_dir, backend="onnx", load_in_background=False)) as c:
        assert c.get("/v1/model").json()["backend"] == "onnx"
        r = c.post("/v1/predict", files=[("files", (f"{i}.png", png(images[i]), "image/png")) for i in range(7)])
        assert [p["label_index"] for p in r.json()["predictions"]] == predict_proba(
            load_model(model_dir), images[:7]
        ).argmax(1).tolist()
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    assert cli.main(["predict", str(model_dir), str(tmp_path / "a.png"), "--backend", "onnx", "--format", "json"]) == 0

    # export also made an int8 file and measured every backend on validation images.
    assert (model_dir / "model.int8.onnx").exists()
    record = json.loads((model_dir / "backend.json").read_text())
    measured = record["backends"]
    assert record["n_validation"] > 0 and measured["torch"]["available"]
    # By its own measurements: the fastest at batch 64 of those within the drop allowed of torch float32.
    bar = measured["torch"]["val_accuracy"] - INT8_MAX_ACCURACY_DROP
    holding = {name for name, r in measured.items() if r["available"] and r["val_accuracy"] >= bar}
    assert {name for name, r in measured.items() if r.get("holds_accuracy")} == holding
    assert record["chosen"] == max(holding, key=lambda name: measured[name]["batch64_images_per_s"])
    assert report["backend"]["chosen"] == record["chosen"]
    with TestClient(create_app(model_dir, load_in_background=False)) as c:  # auto = the recorded choice
        assert c.get("/v1/model").json()["backend"] == record["chosen"]


@pytest.mark.parametrize(
    ("measured", "chosen"),
    [
        # Per backend: validation accuracy and batch-64 images/s, or None where it is not available.
        # torch float32 scores 0.900, so the bar is 0.898.
        pytest.param(
            {"torch": (0.900, 100), "torch-bf16": (0.899, 200), "onnx": (0.900, 150), "onnx-int8": (0.890, 400)},
            "torch-bf16",
            id="the-fastest-loses-a-point",
        ),
        pytest.param(
            {"torch": (0.900, 100), "torch-bf16": None, "onnx": (0.900, 150), "onnx-int8": (0.950, 120)},
            "onnx",
            id="speed-not-accuracy-decides-among-those-holding",
        ),
        pytest.param(
            {"torch": (0.900, 100), "torch-bf16": (0.897, 300), "onnx": (0.850, 150), "onnx-int8": None},
            "torch",
            id="only-the-reference-holds",
        ),
    ],
)
def test_backend_choice_is_the_fastest_that_holds_accuracy(tmp_path, monkeypatch, measured, chosen):
    from types import SimpleNamespace

    from deepautodnn.inference import backends, timing
    from deepautodnn.inference.export import select_backend

    def make_backend(model_dir, name):
        if measured[name] is None:
            raise ValueError(f"no {name} here")
        return SimpleNamespace(name=name)

    monkeypatch.setattr(backends, "make_backend", make_backend)
    monkeypatch.setattr(backends, "backend_accuracy", lambda backend, x, y: measured[backend.name][0])
    monkeypatch.setattr(
        timing,
        "backend_speed",
        lambda backend, x, batches, seconds_per_batch: {
            "1": {"p50_ms": 1.0},
            "64": {"images_per_s": float(measured[backend.name][1])},
        },
    )
    record = select_backend(tmp_path, np.zeros((8, 28, 28), np.uint8), np.zeros(8, np.int64))
    assert record["chosen"] == chosen
    assert json.loads((tmp_path / "backend.json").read_text())["chosen"] == chosen
    for name, row in record["backends"].items():
        assert row["available"] == (measured[name] is not None)
        if row["available"]:
            assert row["holds_accuracy"] == (measured[name][0] >= 0.898), name


def test_every_backend_agrees_with_torch_float32(tiny_run, tmp_path, test_images):
    from deepautodnn.inference.backends import make_backend
    from deepautodnn.inference.export import export_onnx, quantize_int8
    from deepautodnn.inference.names import BACKENDS
    from deepautodnn.utils.runtime import bf16_supported

    images = test_images[0][:500]
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run[0], model_dir)
    quantize_int8(export_onnx(model_dir), model_dir / "model.int8.onnx", images[:256])
    ref_proba, ref_recon, ref_logits, ref_features, ref_embedding = make_backend(model_dir, "torch").run(images)
    assert ref_embedding is None, "search vectors only when asked for"
    for name in BACKENDS:
        if name == "torch-bf16" and not bf16_supported(torch.device("cpu")):
            continue
        proba, recon, logits, features, _ = make_backend(model_dir, name).run(images)
        assert proba.shape == ref_proba.shape and recon.shape == ref_recon.shape == images.shape
        assert logits.shape == ref_logits.shape and features.shape == ref_features.shape
        agreement = (proba.argmax(1) == ref_proba.argmax(1)).mean()
        assert agreement >= (0.999 if name == "onnx" else 0.95), name  # reduced precision may flip a few
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend(model_dir, "tensorrt")


def test_onnx_backend_without_export_is_a_clear_error(tiny_run, tmp_path, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    assert cli.main(["predict", str(tiny_run[0]), str(tmp_path / "a.png"), "--backend", "onnx"]) == 2
    assert "deepautodnn export" in capsys.readouterr().err


def test_without_the_reconstruction_every_other_output_is_the_same(tiny_run, tmp_path, test_images):
    from deepautodnn.inference.backends import make_backend
    from deepautodnn.inference.export import export_onnx

    images = test_images[0][:64]
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run[0], model_dir)
    export_onnx(model_dir)
    for name in ("torch", "onnx"):
        backend = make_backend(model_dir, name)
        full, lean = backend.run(images), backend.run(images, reconstruction=False)
        assert full.recon.shape == images.shape and lean.recon is None, name
        for field in ("proba", "logits", "features"):
            np.testing.assert_allclose(getattr(lean, field), getattr(full, field), rtol=1e-5, atol=1e-6, err_msg=name)
    # Both ONNX sessions stop their threads spinning once a run returns (what follows a run needs the cores).
    onnx = make_backend(model_dir, "onnx")
    for session in (onnx.session, onnx._session_without_reconstruction()[0]):
        assert session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"


def _cpu(cpu_class: str, **flags) -> dict:
    from deepautodnn.utils.runtime import SPEED_FLAGS

    return {"cpu_class": cpu_class, "cpu_features": {f: flags.get(f, False) for f in SPEED_FLAGS}}


def test_auto_rechecks_a_choice_made_on_another_cpu(tiny_run, tmp_path, test_images, monkeypatch):
    """backend.json from an AVX-512 VNNI machine chose int8; on an AVX2 CPU without VNNI, "auto"
    leaves int8 out, times the rest and says so in one line. On the same CPU it takes the record."""
    from deepautodnn.inference import backends
    from deepautodnn.inference.export import export_onnx, quantize_int8

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run[0], model_dir)
    quantize_int8(export_onnx(model_dir), model_dir / "model.int8.onnx", test_images[0][:64])
    avx512 = _cpu("avx512-bf16", avx2=True, fma=True, avx512f=True, avx512_bf16=True, avx512_vnni=True)
    held = {"available": True, "holds_accuracy": True}
    names = ("torch", "torch-bf16", "onnx", "onnx-int8")
    record = {"chosen": "onnx-int8", "backends": dict.fromkeys(names, held), "machine": avx512}
    (model_dir / "backend.json").write_text(json.dumps(record))
    lines = []

    monkeypatch.setattr(backends, "_cpu_now", lambda: avx512)
    assert backends.make_backend(model_dir, echo=lines.append).name == "onnx-int8"
    assert "chosen by `export` on this CPU class (avx512-bf16)" in lines[-1]

    monkeypatch.setattr(backends, "_cpu_now", lambda: _cpu("avx2", avx2=True, fma=True))
    chosen = backends.make_backend(model_dir, echo=lines.append)
    assert chosen.name in ("torch", "onnx")
    line = lines[-1]
    assert line.startswith(f"backend auto: {chosen.name} (") and "re-checked on this avx2 CPU" in line
    assert "onnx-int8: no VNNI" in line and "torch-bf16: no bf16" in line and "torch " in line and "onnx " in line

    del record["machine"]  # a record from before CPU features were kept is re-checked too
    (model_dir / "backend.json").write_text(json.dumps(record))
    backends.make_backend(model_dir, echo=lines.append)
    assert "a CPU it did not describe" in lines[-1]
