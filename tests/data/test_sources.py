"""Training on your own images: class folders and Kaggle-style CSV, with clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deepautodnn import cli, get_preset, load_model, train_run
from deepautodnn.config import CLASS_NAMES
from deepautodnn.data.fashion_mnist import DataError
from deepautodnn.data.sources import load_csv, load_run_data, parse_source
from tests.helpers.models import ONE_EPOCH_PER_STAGE


def tiny_config():
    cfg = get_preset("fast")
    cfg.train.ae_epochs, cfg.train.dnn_epochs, cfg.train.finetune_epochs = 1, 1, 1
    return cfg


@pytest.fixture(scope="module")
def fmnist(data_dir):
    from deepautodnn.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist("train", data_dir)


def write_folder_tree(root, images, labels, per_class=12):
    """Three classes as named folders: 28x28 PNGs and white-background RGB JPEG product shots."""
    names = {9: "boots", 1: "trousers", 8: "bags"}
    for k, name in names.items():
        folder = root / name / ("nested" if k == 8 else "")
        folder.mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(images[labels == k][:per_class]):
            if i % 2:
                Image.fromarray(255 - arr).resize((200, 200)).convert("RGB").save(folder / f"{i}.jpg", quality=90)
            else:
                Image.fromarray(arr).save(folder / f"{i}.png")
    (root / "boots" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "boots" / "notes.txt").write_text("not an image")
    return sorted(names.values())


def test_image_folder_training_end_to_end(tmp_path, fmnist, capsys):
    images, labels = fmnist
    names = write_folder_tree(tmp_path / "shop", images, labels)
    run_dir = tmp_path / "run"
    metrics = train_run(tiny_config(), run_dir, data=f"imagefolder:{tmp_path / 'shop'}", echo=lambda m: None)
    # 36 images: 4 held out for test, 3 for validation, the rest train.
    assert metrics["n"] == 4 and metrics["class_names"] == names
    skipped = {item["file"].rsplit("/", 1)[-1] for item in metrics["skipped_files"]}
    assert skipped == {"broken.png", "notes.txt"}
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"]["class_names"] == names and saved["data"].startswith("imagefolder:")
    assert load_model(run_dir).config.num_classes == 3
    # predict prints the folder names; evaluate uses the same held-out test images.
    boot = tmp_path / "boot.png"
    Image.fromarray(images[labels == 9][50]).save(boot)
    assert cli.main(["predict", str(run_dir), str(boot), "--format", "json"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert pred["label"] in names and {t["label"] for t in pred["top_k"]} <= set(names)
    assert cli.main(["evaluate", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4


def test_image_folder_errors(tmp_path, fmnist):
    images, labels = fmnist
    root = tmp_path / "shop"
    write_folder_tree(root, images, labels)
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: class 'empty' has no readable images"):
        load_run_data(f"imagefolder:{root}")
    (root / "empty").rmdir()
    few = root / "hats"
    few.mkdir()
    for i in range(2):
        Image.fromarray(images[i]).save(few / f"{i}.png")
    with pytest.raises(DataError, match=r"too few images to split for class 'hats' \(2\)"):
        load_run_data(f"imagefolder:{root}")
    with pytest.raises(DataError, match="not a folder"):
        load_run_data(f"imagefolder:{tmp_path / 'missing'}")


def write_kaggle_csv(path, images, labels):
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    rows = [",".join(map(str, [int(y), *x.ravel().tolist()])) for x, y in zip(images, labels)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def test_csv_training_keeps_fashion_mnist_names(tmp_path, fmnist, capsys):
    images, labels = fmnist
    path = tmp_path / "fashion-mnist_train.csv"
    write_kaggle_csv(path, images[:200], labels[:200])
    x, y, names = load_csv(path, 28)
    np.testing.assert_array_equal(x, images[:200])
    assert names == list(CLASS_NAMES) and y.tolist() == labels[:200].tolist()
    run_dir = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                f"csv:{path}",
                "--out",
                str(run_dir),
                "--quiet",
                *ONE_EPOCH_PER_STAGE,
            ]
        )
        == 0
    )
    assert json.loads((run_dir / "metrics.json").read_text())["n"] == 20


@pytest.mark.parametrize(
    "text,message",
    [
        ("pixel1,pixel2\n1,2\n", "header starting with 'label'"),
        ("label,pixel1,pixel2\n1,2,3\n", "needs 784"),
        ("label," + ",".join(f"p{i}" for i in range(784)) + "\n1," + ",".join(["300"] * 784) + "\n", "must be 0-255"),
        ("label," + ",".join(f"p{i}" for i in range(784)) + "\n1," + ",".join(["x"] * 784) + "\n", "whole numbers"),
    ],
)
def test_bad_csv_gives_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        load_csv(path, 28)
    assert str(path) in str(err.value)


def test_data_flag_values(capsys):
    assert parse_source(None) == ("fashion-mnist", None)
    with pytest.raises(ValueError, match="imagefolder:PATH"):
        parse_source("folder:/x")
    assert cli.main(["train", "--data", "imagefolder:", "--out", "/tmp/never"]) == 2
    assert "imagefolder:PATH" in capsys.readouterr().err
