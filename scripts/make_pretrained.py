"""Make the pretrained model shipped as `fashion-mnist` (deepautodnn/models/shipped/fashion-mnist).

    python scripts/make_pretrained.py                  # trains `fast` with seed 0 into runs/pretrained-fast-seed0
    python scripts/make_pretrained.py --run RUN_DIR    # packages a finished run instead

Steps: train (unless --run names a finished one); copy the model directory's files that serve a
prediction (config, weights, metrics, unknown-input detector); store the weights in float16 when
that moves test accuracy by at most 0.05 points, else keep float32; fit the unknown-input detector
again on the weights as shipped, its kNN bank stored in float16 (validation split only); write MANIFEST.json with every file's
SHA-256, and results/pretrained_fashion-mnist.json with the same digests, the test metrics and
where they were made. The package directory is replaced only once everything has succeeded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save

REPO = Path(__file__).resolve().parents[1]
NAME = "fashion-mnist"
MAX_HALF_COST_POINTS = 0.05  # float16 storage may cost at most this much test accuracy
FIRST_N = 1000  # the test that checks the shipped model evaluates this many test images
SHIPPED = ("config.json", "model.safetensors", "unknown.json", "unknown.safetensors", "unknown_autoencoder.safetensors")
HALVED = (
    "model.safetensors",
    "unknown_autoencoder.safetensors",
)  # network weights; calibration rounds the kNN bank to float16 itself


def halve_weights(path: Path) -> None:
    """Rewrite a safetensors file with its float32 tensors in float16, checksum beside it."""
    from deepautodnn.utils.files import write_with_checksum

    tensors = {k: (v.half() if v.dtype == torch.float32 else v) for k, v in load_file(path).items()}
    write_with_checksum(path, save(tensors, metadata={"format": "pt", "stored": "float16"}))


def test_accuracy(model_dir: Path, images, labels) -> tuple[float, float]:
    """(accuracy on the whole test split, accuracy on its first FIRST_N images), torch float32."""
    from deepautodnn.inference.evaluate import predict_proba
    from deepautodnn.models.serialization import load_model

    pred = predict_proba(load_model(model_dir), images).argmax(1)
    right = pred == labels
    return float(right.mean()), float(right[:FIRST_N].mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished `fast` run to package (default: train one)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--results", default=str(REPO / "results" / f"pretrained_{NAME}.json"))
    args = parser.parse_args(argv)

    from deepautodnn.config import resolve_preset
    from deepautodnn.inference.evaluate import evaluate_model
    from deepautodnn.models.pretrained import MANIFEST_FILE, pretrained_root
    from deepautodnn.models.serialization import METRICS_FILE, load_model
    from deepautodnn.training.run import calibrate_model_dir, load_model_run_data, train_run
    from deepautodnn.utils.files import atomic_write_json, read_json, sha256_hex
    from deepautodnn.utils.runtime import bf16_supported, machine_info, provenance, select_device

    run = Path(args.run or REPO / "runs" / f"pretrained-fast-seed{args.seed}")
    if not (run / "model.safetensors").is_file():
        cfg = resolve_preset("fast", bf16=bf16_supported(select_device("cpu")))
        train_run(cfg, run, seed=args.seed, data_dir=args.data_dir, device="cpu")
    record = read_json(run / "config.json")
    if record.get("preset") not in ("fast", "fast-fp32") or record.get("data") not in (None, "fashion-mnist"):
        raise SystemExit(f"{run}: not a `fast` run on Fashion-MNIST; the shipped model is one")

    data = load_model_run_data(run, args.data_dir)
    images, labels = data.test_images, data.test_labels
    full32, first32 = test_accuracy(run, images, labels)

    with tempfile.TemporaryDirectory(dir=pretrained_root()) as tmp:
        stage = Path(tmp) / NAME
        stage.mkdir()
        for name in SHIPPED:
            for suffix in ("", ".sha256"):
                if (run / (name + suffix)).is_file():
                    shutil.copy2(run / (name + suffix), stage / (name + suffix))
        for name in HALVED:
            if (stage / name).is_file():
                halve_weights(stage / name)
        full16, first16 = test_accuracy(stage, images, labels)
        half = abs(full16 - full32) * 100 <= MAX_HALF_COST_POINTS
        if not half:  # float16 costs too much: ship the float32 files as trained
            for name in HALVED:
                for suffix in ("", ".sha256"):
                    if (run / (name + suffix)).is_file():
                        shutil.copy2(run / (name + suffix), stage / (name + suffix))
        # The detector's thresholds are fitted to the weights as shipped (validation split only).
        calibrate_model_dir(stage, data_dir=args.data_dir, half_bank=True, echo=lambda m: print(m, file=sys.stderr))
        metrics = {
            "split": "test",
            **evaluate_model(load_model(stage), images, labels),
            "preset": record["preset"],
            "seed": record.get("seed"),
            "data": "fashion-mnist",
            "weights_dtype": "float16" if half else "float32",
        }
        atomic_write_json(stage / METRICS_FILE, metrics)
        files = {p.name: sha256_hex(p.read_bytes()) for p in sorted(stage.iterdir()) if p.is_file()}
        shipped_first = first16 if half else first32
        manifest = {
            "name": NAME,
            "preset": record["preset"],
            "seed": record.get("seed"),
            "weights_dtype": metrics["weights_dtype"],
            "test_accuracy": metrics["accuracy"],
            f"test_accuracy_first_{FIRST_N}": shipped_first,
            "files": files,
        }
        atomic_write_json(stage / MANIFEST_FILE, manifest)
        files[MANIFEST_FILE] = sha256_hex((stage / MANIFEST_FILE).read_bytes())
        final = pretrained_root() / NAME
        old = Path(tmp) / "replaced"
        if final.exists():
            final.rename(old)
        stage.rename(final)

    detector = read_json(final / "unknown.json")
    result = {
        "benchmark": "pretrained",
        **provenance(),
        "name": NAME,
        "source_run": str(run),
        "preset": record["preset"],
        "seed": record.get("seed"),
        "weights_dtype": manifest["weights_dtype"],
        "test_accuracy": metrics["accuracy"],
        "test_macro_f1": metrics["macro"]["f1"],
        f"test_accuracy_first_{FIRST_N}": shipped_first,
        "test_accuracy_float32": full32,
        "test_accuracy_float16": full16,
        "float16_cost_points": (full32 - full16) * 100,
        "max_float16_cost_points": MAX_HALF_COST_POINTS,
        "unknown_false_alarm_rate": detector.get("false_alarm_rate"),
        "files": {name: {"sha256": digest, "bytes": (final / name).stat().st_size} for name, digest in files.items()},
        "total_bytes": sum((final / name).stat().st_size for name in files),
        "machine": machine_info(),
    }
    atomic_write_json(args.results, result)
    print(json.dumps({k: v for k, v in result.items() if k != "files"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
