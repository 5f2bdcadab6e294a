"""Out-of-distribution benchmark of a model directory's unknown-input detection. Prints JSON.

In-distribution: the Fashion-MNIST test images as arrays, and each realistic photo variant of them
(`photo_variants.VARIANTS`), read through the real preprocessing; per set the accuracy and the
share flagged unknown (false alarms). Foreign: the sets of `foreign_images.SETS`, through the same
preprocessing. Per foreign set, for the fused detector and every signal alone: AUROC against the
test images (and against every in-distribution image together), the false-positive rate at 95%
true positives, and the detection rate at the calibrated threshold (each signal alone at its own
threshold for the same false-alarm rate). Also the cost of the whole predict path per image.

    python benchmarks/ood.py MODEL_DIR [--backend auto] [--n 2000] [--n-variant 500] [--n-foreign 300] \
        [--seed 0] [--out results/ood_fast_seed0_cpu.json] [--markdown results/ood_fast_seed0_cpu.md]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _emit import emit_json
from foreign_images import foreign_sets
from photo_variants import render_variants

from deepautodnn import load_fashion_mnist
from deepautodnn.data.preprocess import ImageError, load_preprocessed
from deepautodnn.experiments.ood_report import ood_markdown, separation
from deepautodnn.inference.backends import make_backend, run_batched
from deepautodnn.inference.ood import UnknownDetector, evidence_of_arrays
from deepautodnn.models.serialization import load_config
from deepautodnn.utils.runtime import machine_info


def read_photos(photos: list[bytes], size: int) -> tuple[np.ndarray, list[dict], int]:
    """Model inputs and evidence of encoded photos; how many could not be read."""
    images, evidence, failed = [], [], 0
    for i, data in enumerate(photos):
        try:
            p = load_preprocessed(data, size, name=f"image {i}")
        except ImageError:
            failed += 1
            continue
        images.append(p.image)
        evidence.append(p.evidence)
    return np.stack(images), evidence, failed


def score_set(detector, backend, images, evidence):
    """(outputs, every signal's raw score, the normalised scores, fused/threshold) for one set."""
    out = run_batched(backend, images)
    _, cal = detector.calibration_for(backend.name)
    signals = detector.signals(out, images, evidence)
    return out, signals, cal.fuse(signals, detector.fused_signals), cal


def predict_path_ms(model_dir: str, backend_name: str, photos: list[bytes], repeats: int = 1) -> float:
    """Median milliseconds per image of the whole path, one image at a time: decode, preprocess,
    the backend, unknown detection."""
    from deepautodnn.inference.predict import run_with_detection

    backend = make_backend(model_dir, backend_name)
    detector = UnknownDetector.load(model_dir)
    size = load_config(model_dir).model.image_size
    times = []
    for data in photos * repeats:
        start = time.perf_counter()
        p = load_preprocessed(data, size)
        run_with_detection(backend, detector, p.image[None], [p.evidence])
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--n", type=int, default=2000, help="test images as arrays (default: 2000)")
    parser.add_argument("--n-variant", type=int, default=500, help="test images per photo variant (default: 500)")
    parser.add_argument("--n-foreign", type=int, default=300, help="images per foreign set (default: 300)")
    parser.add_argument("--n-timing", type=int, default=100, help="photos timed one at a time (default: 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--markdown", help="also write the tables (rendered from the JSON) here")
    args = parser.parse_args()

    detector = UnknownDetector.load(args.model_dir)
    if detector is None or not hasattr(detector, "stats"):
        sys.exit(f"{args.model_dir} has no fused unknown detector; run `deepautodnn calibrate {args.model_dir}`")
    backend = make_backend(args.model_dir, args.backend)
    size = load_config(args.model_dir).model.image_size
    images, labels = load_fashion_mnist("test")
    calibrated_for, cal = detector.calibration_for(backend.name)
    result = {
        "benchmark": "ood",
        "command": "python " + " ".join(sys.argv),
        "model_dir": args.model_dir,
        "backend": backend.name,
        "calibrated_for": calibrated_for,
        "seed": args.seed,
        "false_alarm_rate": detector.false_alarm_rate,
        "fused_signals": list(detector.fused_signals),
        "threshold": cal.threshold,
        "in_distribution": {},
        "foreign": {},
    }

    def alone_flags(signals) -> dict:
        return {k: float((v > cal.alone[k]).mean()) for k, v in signals.items()}

    start = time.perf_counter()
    test_x, test_y = images[: args.n], labels[: args.n]
    in_sets = {"test_arrays": (test_x, evidence_of_arrays(test_x), test_y, 0)}
    variant_x, variant_y = images[: args.n_variant], labels[: args.n_variant]
    for name, photos in render_variants(variant_x, seed=args.seed).items():
        x, ev, failed = read_photos(photos, size)
        in_sets[name] = (x, ev, variant_y, failed)
    id_scores = {}
    for name, (x, ev, y, failed) in in_sets.items():
        out, signals, fused, _ = score_set(detector, backend, x, ev)
        id_scores[name] = (signals, fused)
        result["in_distribution"][name] = {
            "n": len(x),
            "unreadable": failed,
            "accuracy": float((out.proba.argmax(1) == y).mean()),
            "flagged_unknown": float((fused > cal.threshold).mean()),
            "flagged_alone": alone_flags(signals),
        }
        print(
            name,
            {k: v for k, v in result["in_distribution"][name].items() if k != "flagged_alone"},
            file=sys.stderr,
            flush=True,
        )

    ref_signals, ref_fused = id_scores["test_arrays"]
    all_signals = {k: np.concatenate([s[k] for s, _ in id_scores.values()]) for k in ref_signals}
    all_fused = np.concatenate([f for _, f in id_scores.values()])
    for name, photos in foreign_sets(args.n_foreign, seed=args.seed).items():
        x, ev, failed = read_photos(photos, size)
        _, signals, fused, _ = score_set(detector, backend, x, ev)
        detectors = {
            "fused": {
                "detected": float((fused > cal.threshold).mean()),
                **separation(ref_fused, fused),
                "auroc_vs_all_in_distribution": separation(all_fused, fused)["auroc"],
            }
        }
        for k, v in signals.items():
            detectors[k] = {
                "detected": float((v > cal.alone[k]).mean()),
                **separation(ref_signals[k], v),
                "auroc_vs_all_in_distribution": separation(all_signals[k], v)["auroc"],
            }
        result["foreign"][name] = {"n": len(x), "unreadable": failed, "detectors": detectors}
        print(name, detectors["fused"], file=sys.stderr, flush=True)
    result["seconds"] = time.perf_counter() - start

    jpegs = render_variants(images[: args.n_timing], names=["plain_product_shot"], seed=args.seed)["plain_product_shot"]
    result["predict_ms_per_image"] = {
        "backend": backend.name,
        "photos": f"plain_product_shot JPEG, {len(jpegs)} images",
        "median_ms": predict_path_ms(args.model_dir, backend.name, jpegs),
    }
    result["machine"] = machine_info()
    emit_json(result, args.out)
    if args.markdown:
        from pathlib import Path

        Path(args.markdown).write_text(ood_markdown(result))


if __name__ == "__main__":
    main()
