"""The pretrained model shipped by name: its files verified, its accuracy what results/ says, and
its name accepted wherever a model directory is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepautodnn import cli, load_model
from deepautodnn.errors import ModelFileError
from deepautodnn.inference.evaluate import predict_proba
from deepautodnn.models.pretrained import (
    MANIFEST_FILE,
    PRETRAINED,
    pretrained_dir,
    pretrained_models,
    resolve_model_dir,
    verify_manifest,
)
from deepautodnn.utils.files import read_json

RESULTS = Path(__file__).parents[2] / "results" / "pretrained_fashion-mnist.json"
FIRST_N = 1000


def test_shipped_files_are_the_ones_results_records():
    record = read_json(RESULTS)
    shipped = pretrained_dir("fashion-mnist")
    manifest = read_json(shipped / MANIFEST_FILE)
    recorded = {name: entry["sha256"] for name, entry in record["files"].items() if name != MANIFEST_FILE}
    assert manifest["files"] == recorded
    assert {p.name for p in shipped.iterdir()} == set(recorded) | {MANIFEST_FILE}, "nothing unlisted ships"
    assert record["total_bytes"] < 10 * 2**20, "package data stays small: weights and detector in float16"


def test_shipped_accuracy_on_the_first_1000_test_images_matches_results(test_images):
    images, labels = test_images
    model = load_model("fashion-mnist")
    accuracy = float((predict_proba(model, images[:FIRST_N]).argmax(1) == labels[:FIRST_N]).mean())
    # float32 sums differ in their last bits between CPU classes: allow one image either way
    assert accuracy == pytest.approx(read_json(RESULTS)[f"test_accuracy_first_{FIRST_N}"], abs=1.5 / FIRST_N)


def test_a_damaged_or_edited_install_is_refused_naming_the_file(tmp_path):
    copy = tmp_path / "fashion-mnist"
    shutil.copytree(pretrained_dir("fashion-mnist"), copy)
    manifest = read_json(copy / MANIFEST_FILE)
    verify_manifest(copy, manifest)
    (copy / "unknown.json").write_text((copy / "unknown.json").read_text().replace("0.05", "0.5"))
    with pytest.raises(ModelFileError, match=r"unknown.json: SHA-256 differs"):
        verify_manifest(copy, manifest)
    (copy / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match=r"model.safetensors: missing"):
        verify_manifest(copy, manifest)


def test_names_resolve_but_a_users_own_folder_wins(tmp_path, monkeypatch):
    assert resolve_model_dir("fashion-mnist") == pretrained_dir("fashion-mnist")
    with pytest.raises(ModelFileError, match="no pretrained model of that name.*fashion-mnist"):
        pretrained_dir("fashion-mnst")
    monkeypatch.chdir(tmp_path)
    shutil.copytree(pretrained_dir("fashion-mnist"), tmp_path / "fashion-mnist")
    assert resolve_model_dir("fashion-mnist") == Path("fashion-mnist")
    assert [m["name"] for m in pretrained_models()] == list(PRETRAINED)


def test_the_name_works_in_the_cli(tmp_path, capsys, test_images):
    from PIL import Image

    images, labels = test_images
    Image.fromarray(images[0]).save(tmp_path / "item.png")
    assert cli.main(["predict", "fashion-mnist", str(tmp_path / "item.png"), "--format", "json"]) == 0
    (prediction,) = json.loads(capsys.readouterr().out)
    assert prediction["label_index"] == int(labels[0]) and prediction["unknown"] is not None
    assert cli.main(["models"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out
    assert cli.main(["export", "fashion-mnist"]) == 2
    assert "copy it first" in capsys.readouterr().err


def test_the_name_works_in_the_python_api_and_the_service():
    from fastapi.testclient import TestClient

    from deepautodnn.inference.ood import UnknownDetector
    from deepautodnn.serve.app import create_app

    assert UnknownDetector.load("fashion-mnist") is not None
    with TestClient(create_app("fashion-mnist", load_in_background=False)) as client:
        info = client.get("/v1/model").json()
    assert info["test_accuracy"] == pytest.approx(read_json(RESULTS)["test_accuracy"])
    assert np.isfinite(info["test_accuracy"])


def test_the_readme_example_photos_get_the_labels_their_names_give():
    """`deepautodnn predict fashion-mnist examples/`, the README's first command."""
    from deepautodnn.inference.predict import predict_files

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.jpg"))
    assert len(examples) == 3
    report = predict_files(load_model("fashion-mnist"), examples)
    for p in report.predictions:
        assert p["label"].lower().replace("/", "-").replace(" ", "-") == Path(p["file"]).stem
