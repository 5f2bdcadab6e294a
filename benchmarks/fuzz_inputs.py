"""Fuzz every input reader for many cases and record how many were tried and how each ended.

    python benchmarks/fuzz_inputs.py --cases 10000 --out results/fuzz_cpu.json

Runs tests/helpers/fuzz_worker.py once per target (the same worker the test suite runs briefly):
random and mutated bytes, only deepautodnn's own errors may escape, a deadline on every case, the
address space capped. A target that fails stops with its hypothesis report on stderr.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _emit import emit_json

WORKER = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "fuzz_worker.py"
TARGETS = ("idx", "image", "csv", "imagefolder", "config", "config-fields", "weights")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000, help="cases per target (default: 10000)")
    parser.add_argument("--seed", type=int, default=1, help="hypothesis seed (default: 1; the suite uses 0)")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    results, start = [], time.perf_counter()
    for target in args.targets:
        done = subprocess.run(
            [sys.executable, "-W", "ignore", str(WORKER), target, str(args.cases), "--seed", str(args.seed)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(done.stderr[-5000:], file=sys.stderr)
            results.append({"target": target, "failed": True})
            break
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{target}: {results[-1]['cases']} cases, {results[-1]['outcomes']}", file=sys.stderr)
    emit_json(
        {
            "command": " ".join(["python", *sys.argv]),
            "targets": results,
            "total_cases": sum(r.get("cases", 0) for r in results),
            "all_passed": not any(r.get("failed") for r in results),
            "seconds": round(time.perf_counter() - start, 1),
        },
        args.out,
    )
    return 0 if all(not r.get("failed") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
