"""Fuzzing of every reader of outside input (IDX, images, CSV, image folders, configs, weights).

Each target runs in its own process (tests/helpers/fuzz_worker.py) with hypothesis, its address
space capped and a deadline on every case: only deepautodnn's own errors may escape. The suite runs
a few hundred cases per target; `benchmarks/fuzz_inputs.py` runs thousands and records them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "helpers" / "fuzz_worker.py"
CASES = {"idx": 300, "image": 300, "csv": 300, "imagefolder": 150, "config": 300, "config-fields": 200, "weights": 200}


@pytest.mark.parametrize("target", sorted(CASES))
def test_fuzzed_input_gives_only_clear_errors(target):
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(WORKER), target, str(CASES[target]), "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # a hypothesis failure prints the escaped error
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["cases"] == CASES[target]
    rejected = sum(n for kind, n in result["outcomes"].items() if kind != "accepted")
    assert rejected > 0  # the fuzzer reaches the error paths at all
