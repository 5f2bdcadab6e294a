"""Choose the unknown detector's fusion recipe on development data, never on the benchmark's.

Development data: the model's validation images (not test) rendered by the photo-variant
generator with seed 1, and the foreign sets drawn with seed 1 (the benchmark uses test images and
seed 0). Each recipe is a set of signals fused by the largest normalised score, calibrated exactly
as `training.calibrate.fit_detector` does; per recipe we record the false alarms on every development
variant and the detection rate on every development foreign set. Every trial is appended to
results/recipe_trials.json.

    python benchmarks/ood_recipe.py MODEL_DIR [--n-variant 300] [--n-foreign 150] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from foreign_images import foreign_sets
from ood import read_photos
from photo_variants import render_variants

from deepautodnn.inference.backends import make_backend, run_batched
from deepautodnn.inference.ood import (
    MODEL_SIGNALS,
    SIGNALS,
    BackendCalibration,
    UnknownDetector,
    evidence_of_arrays,
    input_signals,
    model_signals,
)
from deepautodnn.models.serialization import load_config
from deepautodnn.training.calibrate import CALIBRATION_PHOTOS, photo_inputs
from deepautodnn.training.run import load_model_run_data
from deepautodnn.utils.runtime import machine_info

RECIPES = {
    "all signals": SIGNALS,
    "model signals only": MODEL_SIGNALS,
    "features + input evidence": (
        "mahalanobis",
        "knn",
        "foreground_low",
        "foreground_high",
        "background_residual",
        "object_count",
        "high_frequency",
        "object_touches_border",
    ),
    "knn + msp + input evidence": (
        "msp",
        "knn",
        "foreground_low",
        "foreground_high",
        "background_residual",
        "object_count",
        "high_frequency",
        "object_touches_border",
    ),
    "knn + mahalanobis + msp + clean/empty/count": (
        "msp",
        "mahalanobis",
        "knn",
        "foreground_low",
        "background_residual",
        "object_count",
    ),
    "knn + empty + residual + count": ("knn", "foreground_low", "background_residual", "object_count"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--n-variant", type=int, default=300)
    parser.add_argument("--n-foreign", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--false-alarm-rate", type=float, default=0.05)
    parser.add_argument("--trials", default="results/recipe_trials.json")
    args = parser.parse_args()
    start = time.perf_counter()
    detector = UnknownDetector.load(args.model_dir)
    backend = make_backend(args.model_dir, "torch")
    size = load_config(args.model_dir).model.image_size
    data = load_model_run_data(args.model_dir)
    val = data.images[data.val_idx]
    rng = np.random.default_rng(0)  # the calibration images, as training.calibrate makes them
    photo_x, photo_ev = photo_inputs(val[rng.permutation(len(val))[:CALIBRATION_PHOTOS]], 0)

    def signals(x, evidence):
        return {**model_signals(run_batched(backend, x), x, detector.stats), **input_signals(evidence)}

    cal_x = np.concatenate([val, photo_x])
    cal = signals(cal_x, evidence_of_arrays(val) + photo_ev)
    subsets = {"arrays": np.arange(len(cal_x)) < len(val), "photos": np.arange(len(cal_x)) >= len(val)}
    dev_pick = np.random.default_rng(args.seed).permutation(len(val))[: args.n_variant]
    dev_in = {
        name: signals(*read_photos(photos, size)[:2])
        for name, photos in render_variants(val[dev_pick], seed=args.seed).items()
    }
    dev_out = {
        name: signals(*read_photos(photos, size)[:2])
        for name, photos in foreign_sets(args.n_foreign, seed=args.seed).items()
    }
    print(f"signals computed in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    import subprocess

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    trials_path = Path(args.trials)
    trials = json.loads(trials_path.read_text()) if trials_path.exists() else []
    for name, recipe in RECIPES.items():
        t0 = time.perf_counter()
        c = BackendCalibration.fit(cal, subsets, recipe, args.false_alarm_rate)
        false_alarms = {k: float((c.fuse(v, recipe) > c.threshold).mean()) for k, v in dev_in.items()}
        detected = {k: float((c.fuse(v, recipe) > c.threshold).mean()) for k, v in dev_out.items()}
        trial = {
            "study": "unknown-detector fusion (issue 13)",
            "recipe": name,
            "signals": list(recipe),
            "fusion": "max of (s - median) / (q99 - median) over the signals",
            "data": f"validation images x photo variants (seed {args.seed}, {args.n_variant} each); "
            f"foreign sets seed {args.seed}, {args.n_foreign} each",
            "false_alarm_rate": args.false_alarm_rate,
            "model_dir": args.model_dir,
            "validation_false_alarms_max": max(false_alarms.values()),
            "validation_detection_mean": float(np.mean(list(detected.values()))),
            "validation_detection_min": min(detected.values()),
            "false_alarms": false_alarms,
            "detected": detected,
            "seconds": time.perf_counter() - t0,
            "command": "python " + " ".join(sys.argv),
            "commit": commit,
            "machine": machine_info(),
        }
        trials.append(trial)
        print(
            f"{name:48} false alarms max {trial['validation_false_alarms_max']:.3f}  detection mean "
            f"{trial['validation_detection_mean']:.3f} min {trial['validation_detection_min']:.3f}",
            file=sys.stderr,
        )
    trials_path.write_text(json.dumps(trials, indent=2) + "\n")


if __name__ == "__main__":
    main()
