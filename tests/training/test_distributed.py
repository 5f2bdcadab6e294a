"""Data-parallel training under torchrun with 2 gloo processes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepautodnn.training.distributed import DistContext, from_environment
from deepautodnn.training.loop import _batches
from tests.helpers.models import ONE_EPOCH_PER_STAGE

WORKER = Path(__file__).parents[1] / "helpers" / "ddp_worker.py"


def torchrun(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ranks_split_each_global_batch_without_overlap():
    n, batch = 103, 10
    per_rank = [_batches(n, batch, torch.Generator().manual_seed(5), "cpu", DistContext(r, 2, r)) for r in range(2)]
    single = _batches(n, batch, torch.Generator().manual_seed(5), "cpu")
    assert len(per_rank[0]) == len(per_rank[1]) == len(single)  # every rank takes every step
    for a, b, whole in zip(*per_rank, single):
        assert sorted(torch.cat([a, b]).tolist()) == sorted(whole.tolist())
        assert not set(a.tolist()) & set(b.tolist())
    # A new epoch is a new permutation on every rank alike.
    gen = torch.Generator().manual_seed(5)
    first, second = _batches(n, batch, gen, "cpu"), _batches(n, batch, gen, "cpu")
    assert not torch.equal(torch.cat(first), torch.cat(second))


def test_a_plain_process_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_environment() == DistContext()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        from_environment()


def test_two_gloo_ranks_stay_identical_and_match_one_process(tmp_path):
    subprocess.run([sys.executable, str(WORKER), str(tmp_path)], check=True, timeout=120)
    torchrun(str(WORKER), str(tmp_path))
    two = json.loads((tmp_path / "result-world2.json").read_text())
    assert two["steps"] == 16 and two["max_rank_mismatch"] == 0.0  # bit-identical after every step
    one, both = np.load(tmp_path / "dnn-world1.npy"), np.load(tmp_path / "dnn-world2.npy")
    assert np.abs(one).max() > 0.05
    # Same global batch, gradients averaged over the two halves: equal up to float rounding.
    np.testing.assert_allclose(both, one, atol=1e-6)


def test_torchrun_train_writes_one_run_from_rank_zero(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = torchrun(
        "-m",
        "deepautodnn",
        "train",
        "--preset",
        "fast",
        "--train-limit",
        "600",
        *ONE_EPOCH_PER_STAGE,
        "--out",
        str(out),
        "--quiet",
        "--data-dir",
        str(data_dir),
    )
    assert proc.stderr.count("test accuracy") == 1  # rank 1 prints nothing of its own
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # header + one epoch per stage, logged once
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and 0.0 < metrics["accuracy"] <= 1.0
