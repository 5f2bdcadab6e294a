"""One training-recipe trial on the validation split, appended to results/recipe_trials.json.

Trains every stage of a preset (with `--set` overrides) on the training split and records each
stage's best validation score, its epoch and its time. The test split is never read: recipes are
compared here, and the chosen one is tested once, by `benchmarks/fast_preset.py`.

    python benchmarks/recipe_trial.py --study "fast float32 (issue 15)" --preset fast --fp32 \\
        --set model.encoder_channels=[16,32,64] --set train.finetune_epochs=20

Times are training only: the unknown-input calibration that `train` runs afterwards is not in them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _emit import provenance

from deepautodnn.config import Config, get_preset
from deepautodnn.utils.runtime import machine_info


def with_overrides(cfg: Config, assignments: list[str]) -> Config:
    """`section.field=JSON` assignments applied to `cfg`, every value checked as config.json's are."""
    raw = cfg.to_dict()
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        section, _, name = key.partition(".")
        if section not in ("model", "train") or not name:
            raise SystemExit(f"--set {assignment!r}: write model.FIELD=VALUE or train.FIELD=VALUE")
        raw[section][name] = json.loads(value)
    return Config.from_dict(raw)


def run_trial(cfg: Config, seed: int) -> dict:
    import torch

    from deepautodnn.data.transforms import to_device_data
    from deepautodnn.models.hybrid import build_model
    from deepautodnn.training.run import load_training_split
    from deepautodnn.training.stages import train_stages

    images, labels, train_idx, val_idx = load_training_split(cfg)
    device = torch.device("cpu")
    data = to_device_data(images, labels, train_idx, val_idx, device)
    model = build_model(cfg, seed=seed, device=device)
    rows: list[dict] = []
    start = time.perf_counter()
    summaries = train_stages(model, data, cfg, seed=seed, device=device, log=rows.append)
    stages = {stage: {k: v for k, v in s.items() if k != "stage"} for stage, s in summaries.items()}
    last = stages[list(stages)[-1]]
    return {
        "validation_accuracy": last.get("val_acc"),
        "train_seconds": time.perf_counter() - start,
        "stages": stages,
        "epochs": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="what the trials compare, the same for all of them")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=JSON")
    parser.add_argument("--fp32", action="store_true", help="float32 without bf16 autocast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="")
    parser.add_argument("--trials", default="results/recipe_trials.json")
    args = parser.parse_args()
    cfg = with_overrides(get_preset(args.preset), args.set)
    if args.fp32:
        cfg.train.bf16 = False
    result = run_trial(cfg, args.seed)
    trial = {
        "study": args.study,
        "recipe": " ".join([args.preset, *args.set]) + (" (float32)" if args.fp32 else ""),
        "note": args.note,
        "seed": args.seed,
        "split": "validation",
        "validation_accuracy": result["validation_accuracy"],
        "train_seconds": round(result["train_seconds"], 1),
        "stages": result["stages"],
        "epochs": result["epochs"],
        "config": cfg.to_dict(),
        **provenance(),
        "machine": machine_info(),
    }
    path = Path(args.trials)
    trials = json.loads(path.read_text()) if path.exists() else []
    trials.append(trial)
    path.write_text(json.dumps(trials, indent=1) + "\n")
    print(json.dumps({k: trial[k] for k in ("recipe", "validation_accuracy", "train_seconds")}))


if __name__ == "__main__":
    main()
