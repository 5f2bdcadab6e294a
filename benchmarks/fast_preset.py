"""Train the `fast` preset from scratch for each seed, each in a fresh process, and report wall time,
test accuracy and peak RSS per seed, plus mean and std. Prints JSON (and writes it with --out).

    python benchmarks/fast_preset.py --seeds 0 1 2 --runs runs/bench-fast --out results/fast_preset_cpu.json

It trains what `deepautodnn train --preset fast` trains on this CPU: `fast-fp32` where there is no
bf16 (the preset each seed trained is in the JSON). `--fp32` instead trains the named preset itself
in float32 without channels_last, to check that bf16 costs no accuracy.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from _emit import emit_json, provenance

from deepautodnn.utils.runtime import machine_info


def one_seed(seed: int, run_dir: str, preset: str, fp32: bool) -> dict:
    import torch

    from deepautodnn import get_preset, train_run
    from deepautodnn.config import resolve_preset
    from deepautodnn.utils.runtime import bf16_supported

    if fp32:  # the named preset itself, in float32 without channels_last
        cfg = get_preset(preset)
        cfg.train.bf16 = cfg.train.channels_last = False
    else:  # what `deepautodnn train --preset PRESET` trains on this CPU (`fast-fp32` without bf16)
        cfg = resolve_preset(preset, bf16=bf16_supported(torch.device("cpu")))
    start = time.perf_counter()
    metrics = train_run(cfg, run_dir, seed=seed)
    wall = time.perf_counter() - start
    return {
        "seed": seed,
        "preset_trained": cfg.preset,
        "test_accuracy": metrics["accuracy"],
        "wall_seconds": round(wall, 1),  # data loading + all stages + test evaluation + report
        "train_seconds": round(metrics["train_seconds"], 1),
        "stage_seconds": {k: round(v["seconds"], 1) for k, v in metrics["stages"].items()},
        "best_epochs": {k: v["best_epoch"] for k, v in metrics["stages"].items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        "run_dir": run_dir,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--runs", default="runs/bench-fast", help="parent folder of the run directories")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--fp32", action="store_true", help="float32, no channels_last (numerics check)")
    parser.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_seed is not None:
        print(json.dumps(one_seed(args.one_seed, f"{args.runs}/seed{args.one_seed}", args.preset, args.fp32)))
        return
    per_seed = []
    for seed in args.seeds:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one-seed",
                str(seed),
                "--runs",
                args.runs,
                "--preset",
                args.preset,
                *(["--fp32"] if args.fp32 else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        per_seed.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(per_seed[-1]), file=sys.stderr, flush=True)
    accs = [r["test_accuracy"] for r in per_seed]
    walls = [r["wall_seconds"] for r in per_seed]
    result = {
        "benchmark": "fast_preset",
        "preset": args.preset,
        "preset_trained": per_seed[0]["preset_trained"],
        "precision": "float32" if args.fp32 else "preset (bf16 autocast + channels_last where supported)",
        **provenance(),
        "machine": machine_info(),
        "seeds": args.seeds,
        "test_accuracy_mean": statistics.mean(accs),
        "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "wall_seconds_mean": statistics.mean(walls),
        "wall_seconds_max": max(walls),
        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in per_seed),
        "per_seed": per_seed,
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
