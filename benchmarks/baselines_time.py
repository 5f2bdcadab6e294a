"""Run every Table IV comparator on the full split (one process, the `deepautodnn baselines` code)
and report the total wall time against the 60-minute budget, per-comparator times and accuracy,
and peak RSS. Prints JSON (and writes it with --json-out); the per-comparator JSON goes to --out.

    python benchmarks/baselines_time.py --out results/baselines --json-out results/baselines_time_cpu.json
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from _emit import emit_json

from deepautodnn.experiments.baselines import parse_only, run_baselines
from deepautodnn.utils.runtime import machine_info

BUDGET_SECONDS = 60 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/baselines", help="folder for the per-comparator JSON files")
    parser.add_argument("--only", help="comma-separated comparators (default: all)")
    parser.add_argument("--json-out", help="also write this benchmark's JSON here")
    args = parser.parse_args()
    start = time.perf_counter()
    results = run_baselines(args.out, parse_only(args.only), echo=lambda m: print(m, file=sys.stderr, flush=True))
    wall = time.perf_counter() - start
    result = {
        "benchmark": "baselines_time",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "wall_seconds": round(wall, 1),  # data loading, features, grid searches, fits, test predictions
        "budget_seconds": BUDGET_SECONDS,
        "within_budget": wall <= BUDGET_SECONDS,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "comparators": {
            n: {
                "test_accuracy": r["accuracy"],
                "val_accuracy": r["val_accuracy"],
                "train_seconds": round(r["train_seconds"], 1),
                "predict_seconds": round(r["predict_seconds"], 1),
                "chosen": r["chosen"],
            }
            for n, r in results.items()
        },
    }
    emit_json(result, args.json_out)


if __name__ == "__main__":
    main()
