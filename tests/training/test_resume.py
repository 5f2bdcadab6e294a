"""Crash-safe training: kill -9 at random moments and mid-save, Ctrl-C, a full disk, a NaN loss,
an unwritable folder. Every resumed run must end with the weights of a run never interrupted."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

# The `fast` network for 2 + 2 + 4 epochs on 1,000 images: each epoch well under a second.
import pytest
import torch

from deepautodnn import get_preset, load_model, train_run
from deepautodnn.errors import WriteError
from deepautodnn.experiments.interrupt import Interruption, interrupt
from deepautodnn.training.run import RunError
from deepautodnn.training.state import Checkpointer, NonFiniteLossError
from deepautodnn.utils.files import read_json, sha256_hex
from tests.helpers.models import tiny_config

# The `fast` network for 2 + 2 + 4 epochs on 1,000 images: each epoch well under a second.
TRAIN = [
    "train",
    "--preset",
    "fast",
    "--ae-epochs",
    "2",
    "--dnn-epochs",
    "2",
    "--finetune-epochs",
    "4",
    "--train-limit",
    "1000",
    "--deterministic",
    "--quiet",
]


def _sha(path: Path) -> str:
    return sha256_hex(path.read_bytes())


def _curves(run: Path) -> list[tuple]:
    """metrics.csv without its timing column: what must match an uninterrupted run exactly."""
    with open(run / "metrics.csv", newline="") as f:
        return [tuple(v for k, v in row.items() if k != "seconds") for row in csv.DictReader(f)]


def test_kill_9_at_random_moments_and_mid_save_then_resume_gives_identical_weights(tmp_path, data_dir):
    data = ["--data-dir", str(data_dir)]
    straight = subprocess.run(
        [sys.executable, "-m", "deepautodnn", *TRAIN, *data, "--out", str(tmp_path / "straight")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr[-2000:]

    run = tmp_path / "cut"
    rng = random.Random(7)  # the kill delays: random, but the same on every test run
    plan = [
        Interruption("mid-save-tensors", nth_save=2),  # the 2nd state's tensors: stage ae, epoch 2
        Interruption("random", delay=rng.uniform(0, 0.4)),
        Interruption("mid-save-json", nth_save=1),
        Interruption("ctrl-c", delay=rng.uniform(0, 0.4)),
        Interruption("random", delay=rng.uniform(0, 0.4)),
    ]
    positions = []
    for i, what in enumerate(plan):
        args = [*TRAIN, *data, "--out", str(run)] if i == 0 else ["train", "--resume", str(run), *data]
        record = interrupt(args, run, what, tmp_path)
        assert not record["ended_before_signal"], record
        if what.how == "ctrl-c":  # saved, a clear message, the interrupted exit code
            assert record["exit_code"] == 130, record["stderr_tail"]
            assert "Continue with `deepautodnn train --resume" in record["stderr_tail"]
            assert "Traceback" not in record["stderr_tail"]
        else:
            assert record["exit_code"] == -signal.SIGKILL, record
        assert record["loads"]  # the newest checkpoint always loads after a kill
        positions.append(tuple(record["newest"]))
    assert positions == sorted(positions) and len(set(positions)) >= 4, positions  # each resume made progress

    final = subprocess.run(
        [sys.executable, "-m", "deepautodnn", "train", "--resume", str(run), *data],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr[-2000:]
    assert _sha(run / "model.safetensors") == _sha(tmp_path / "straight" / "model.safetensors")
    assert _curves(run) == _curves(tmp_path / "straight")
    assert not list((run / "checkpoints").glob(".*.tmp")), "leftovers of the killed saves were not cleaned"


def _cfg():
    return tiny_config(finetune_epochs=3)  # three fine-tuning epochs: room to stop and resume inside the stage


QUIET = dict(seed=5, train_limit=600, deterministic=True, echo=lambda m: None)


def test_two_runs_with_one_seed_give_identical_weight_hashes(tmp_path, data_dir):
    hashes = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        train_run(_cfg(), tmp_path / name, data_dir=data_dir, **{**QUIET, "seed": seed})
        hashes.append(_sha(tmp_path / name / "model.safetensors"))
    assert hashes[0] == hashes[1]
    assert hashes[0] != hashes[2]  # the seed matters, so the equality above means something


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    import deepautodnn.training.stages as train  # the classifier stages' cross-entropy

    real = train.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # fine-tuning's 2nd epoch turns NaN (5 steps per epoch here)
        loss = real(*args, **kwargs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] > 5 + 5 + 2 else loss

    monkeypatch.setattr(train.F, "cross_entropy", poisoned)
    with pytest.raises(
        NonFiniteLossError,
        match=r"stage finetune, epoch 2: loss became nan; training stopped, "
        r"the last good checkpoint \(stage finetune, after epoch 1\) is kept",
    ):
        train_run(_cfg(), tmp_path / "run", data_dir=data_dir, **QUIET)
    state = Checkpointer(tmp_path / "run" / "checkpoints").latest()
    assert all(torch.isfinite(v).all() for v in state.section("model").values() if v.is_floating_point())

    monkeypatch.setattr(train.F, "cross_entropy", real)
    train_run(_cfg(), tmp_path / "run", resume=True, data_dir=data_dir, **QUIET)
    train_run(_cfg(), tmp_path / "straight", data_dir=data_dir, **QUIET)
    assert _sha(tmp_path / "run" / "model.safetensors") == _sha(tmp_path / "straight" / "model.safetensors")


def test_full_disk_mid_training_is_a_clear_error_and_earlier_files_survive(tmp_path, data_dir, monkeypatch):
    import deepautodnn.models.serialization as checkpoint

    real_fsync, count = os.fsync, {"n": 0}

    def full_after_a_while(fd):
        count["n"] += 1
        if count["n"] > 12:  # config, stage files and a few epoch states get written first
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", full_after_a_while)
    with pytest.raises(WriteError, match=r"cannot write .*: No space left on device; any earlier .* is intact"):
        train_run(_cfg(), tmp_path / "run", data_dir=data_dir, **QUIET)
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)
    assert Checkpointer(tmp_path / "run" / "checkpoints").latest() is not None
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))
    train_run(_cfg(), tmp_path / "run", resume=True, data_dir=data_dir, **QUIET)  # space back
    train_run(_cfg(), tmp_path / "straight", data_dir=data_dir, **QUIET)
    assert _sha(tmp_path / "run" / "model.safetensors") == _sha(tmp_path / "straight" / "model.safetensors")


def test_unwritable_run_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(RunError, match=r"a-file/run: the run folder can't be written \(Not a directory\)"):
        train_run(_cfg(), blocker / "run", data_dir=tmp_path / "no-data-needed", **QUIET)
    assert blocker.read_text() == "keep me"


def test_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, data_dir):
    train_run(_cfg(), tmp_path / "run", data_dir=data_dir, **QUIET)
    checkpointer = Checkpointer(tmp_path / "run" / "checkpoints")
    older, newest = checkpointer.complete()[-2:]
    tensors = newest.with_suffix(".safetensors")
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one damaged byte inside the tensors
    tensors.write_bytes(bytes(data))
    notes = []
    assert checkpointer.latest(notes.append).path == older
    assert "SHA-256 does not match" in notes[0]


def test_resume_after_interruption_matches_uninterrupted(tmp_path, data_dir, monkeypatch):
    quiet = dict(seed=3, data_dir=data_dir, train_limit=1000, echo=lambda m: None)
    train_run(_cfg(), tmp_path / "straight", **quiet)

    import deepautodnn.training.run as runner

    real = runner.train_stage

    def interrupted(model, data, tcfg, stage, **kw):
        if stage == "finetune":
            raise KeyboardInterrupt
        return real(model, data, tcfg, stage, **kw)

    monkeypatch.setattr(runner, "train_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_run(_cfg(), tmp_path / "cut", **quiet)
    progress = read_json(tmp_path / "cut" / "checkpoints" / "progress.json")
    assert progress["completed"] == ["ae", "dnn"]
    monkeypatch.setattr(runner, "train_stage", real)

    with pytest.raises(RunError, match="already holds a run"):
        train_run(_cfg(), tmp_path / "cut", **quiet)
    train_run(get_preset("paper"), tmp_path / "cut", resume=True, **quiet)  # config comes from the run dir
    a = load_model(tmp_path / "straight").state_dict()
    b = load_model(tmp_path / "cut").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    stages = [line.split(",")[0] for line in (tmp_path / "cut" / "metrics.csv").read_text().splitlines()[1:]]
    assert stages == ["ae", "dnn"] + ["finetune"] * _cfg().train.finetune_epochs  # each epoch logged once


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="nothing to resume"):
        train_run(_cfg(), tmp_path / "empty", resume=True)
