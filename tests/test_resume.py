"""Crash-safe training: kill -9 at random moments and mid-save, Ctrl-C, a full disk, a NaN loss,
an unwritable folder. Every resumed run must end with the weights of a run never interrupted."""

from __future__ import annotations

import csv
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deepautodnn import train_run
from deepautodnn.checkpoint import WriteError
from deepautodnn.config import Config, ModelConfig, TrainConfig
from deepautodnn.runner import RunError
from deepautodnn.training_state import Checkpointer, NonFiniteLossError

HELPER = Path(__file__).parent / "helpers" / "train_with_pause.py"
# The `fast` network for 2 + 2 + 4 epochs on 1,000 images: each epoch well under a second.
TRAIN = ["train", "--preset", "fast", "--ae-epochs", "2", "--dnn-epochs", "2", "--finetune-epochs", "4",
         "--train-limit", "1000", "--deterministic", "--quiet"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _curves(run: Path) -> list[tuple]:
    """metrics.csv without its timing column: what must match an uninterrupted run exactly."""
    with open(run / "metrics.csv", newline="") as f:
        return [tuple(v for k, v in row.items() if k != "seconds") for row in csv.DictReader(f)]


def _start(args: list[str], tmp_path: Path, pause_at: str = "safetensors:0") -> subprocess.Popen:
    env = {**os.environ, "PAUSE_AT": pause_at, "PAUSE_MARKER": str(tmp_path / "paused")}
    return subprocess.Popen([sys.executable, str(HELPER), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _states(run: Path) -> list[str]:
    return [p.stem for p in Checkpointer(run / "checkpoints").complete()]


def test_kill_9_at_random_moments_and_mid_save_then_resume_gives_identical_weights(tmp_path, data_dir):
    data = ["--data-dir", str(data_dir)]
    straight = subprocess.run([sys.executable, "-m", "deepautodnn", *TRAIN, *data, "--out", str(tmp_path / "straight")],
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]

    run = tmp_path / "cut"
    rng = random.Random(7)  # the kill delays: random, but the same on every test run
    first = [*TRAIN, *data, "--out", str(run)]
    resume = ["train", "--resume", str(run), *data]
    marker = tmp_path / "paused"
    # (how the process is started, when it is stopped, how it must end)
    plan = [
        (first, "safetensors:2", "frozen writing its 2nd state's tensors", signal.SIGKILL),
        (resume, "safetensors:0", "a random moment in stage dnn", signal.SIGKILL),
        (resume, "json:1", "frozen writing its 1st state's JSON", signal.SIGKILL),
        (resume, "safetensors:0", "a random moment in fine-tuning", signal.SIGINT),
        (resume, "safetensors:0", "a random moment in fine-tuning", signal.SIGKILL),
    ]
    positions = []
    for args, pause_at, moment, sig in plan:
        marker.unlink(missing_ok=True)
        before = _states(run) if run.exists() else []
        proc = _start(args, tmp_path, pause_at)
        if "frozen" in moment:
            _wait_for(marker.exists, proc, moment)
        else:
            stage = "dnn" if "dnn" in moment else "finetune"
            _wait_for(lambda: any(f"-{stage}-" in s and s not in before for s in _states(run)), proc, moment)
            time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL, f"{moment}: exit {proc.returncode}: {err[-2000:]}"
        else:  # Ctrl-C: saved, a clear message, the interrupted exit code
            assert proc.returncode == 130, err[-2000:]
            assert "Continue with `deepautodnn train --resume" in err and "Traceback" not in err
        # The previous checkpoint always loads: the newest complete pair verifies, no fallback needed.
        checkpointer = Checkpointer(run / "checkpoints")
        newest = checkpointer.complete()[-1]
        state = checkpointer.load(newest)
        positions.append((state.meta["stage"], state.meta["epoch"], state.meta["batch"]))
    assert positions == sorted(positions) and len(set(positions)) >= 4, positions  # each resume made progress

    final = subprocess.run([sys.executable, "-m", "deepautodnn", *resume], capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _sha(run / "model.safetensors") == _sha(tmp_path / "straight" / "model.safetensors")
    assert _curves(run) == _curves(tmp_path / "straight")
    assert not list((run / "checkpoints").glob(".*.tmp")), "leftovers of the killed saves were not cleaned"


def _tiny_cfg() -> Config:
    model = ModelConfig(encoder_channels=(8, 16), encoder_pool=(True, True), dnn_hidden=(32,))
    train = TrainConfig(ae_epochs=1, ae_batch_size=128, dnn_epochs=1, dnn_batch_size=128, finetune_epochs=3,
                        finetune_batch_size=128, augment=True)
    return Config(model=model, train=train, preset="tiny")


QUIET = dict(seed=5, train_limit=600, deterministic=True, echo=lambda m: None)


def test_two_runs_with_one_seed_give_identical_weight_hashes(tmp_path, data_dir):
    hashes = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        train_run(_tiny_cfg(), tmp_path / name, data_dir=data_dir, **{**QUIET, "seed": seed})
        hashes.append(_sha(tmp_path / name / "model.safetensors"))
    assert hashes[0] == hashes[1]
    assert hashes[0] != hashes[2]  # the seed matters, so the equality above means something


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    import deepautodnn.train as train

    real = train.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # fine-tuning's 2nd epoch turns NaN (5 steps per epoch here)
        loss = real(*args, **kwargs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] > 5 + 5 + 2 else loss

    monkeypatch.setattr(train.F, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"stage finetune, epoch 2: loss became nan; training stopped, "
                                                 r"the last good checkpoint \(stage finetune, after epoch 1\) is kept"):
        train_run(_tiny_cfg(), tmp_path / "run", data_dir=data_dir, **QUIET)
    state = Checkpointer(tmp_path / "run" / "checkpoints").latest()
    assert all(torch.isfinite(v).all() for v in state.section("model").values() if v.is_floating_point())

    monkeypatch.setattr(train.F, "cross_entropy", real)
    train_run(_tiny_cfg(), tmp_path / "run", resume=True, data_dir=data_dir, **QUIET)
    train_run(_tiny_cfg(), tmp_path / "straight", data_dir=data_dir, **QUIET)
    assert _sha(tmp_path / "run" / "model.safetensors") == _sha(tmp_path / "straight" / "model.safetensors")


def test_full_disk_mid_training_is_a_clear_error_and_earlier_files_survive(tmp_path, data_dir, monkeypatch):
    import deepautodnn.checkpoint as checkpoint

    real_fsync, count = os.fsync, {"n": 0}

    def full_after_a_while(fd):
        count["n"] += 1
        if count["n"] > 12:  # config, stage files and a few epoch states get written first
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", full_after_a_while)
    with pytest.raises(WriteError, match=r"cannot write .*: No space left on device; any earlier .* is intact"):
        train_run(_tiny_cfg(), tmp_path / "run", data_dir=data_dir, **QUIET)
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)
    assert Checkpointer(tmp_path / "run" / "checkpoints").latest() is not None
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))
    train_run(_tiny_cfg(), tmp_path / "run", resume=True, data_dir=data_dir, **QUIET)  # space is back
    train_run(_tiny_cfg(), tmp_path / "straight", data_dir=data_dir, **QUIET)
    assert _sha(tmp_path / "run" / "model.safetensors") == _sha(tmp_path / "straight" / "model.safetensors")


def test_unwritable_run_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(RunError, match=r"a-file/run: the run folder can't be written \(Not a directory\)"):
        train_run(_tiny_cfg(), blocker / "run", data_dir=tmp_path / "no-data-needed", **QUIET)
    assert blocker.read_text() == "keep me"


def test_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, data_dir):
    train_run(_tiny_cfg(), tmp_path / "run", data_dir=data_dir, **QUIET)
    checkpointer = Checkpointer(tmp_path / "run" / "checkpoints")
    older, newest = checkpointer.complete()[-2:]
    tensors = newest.with_suffix(".safetensors")
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one damaged byte inside the tensors
    tensors.write_bytes(bytes(data))
    notes = []
    assert checkpointer.latest(notes.append).path == older
    assert "SHA-256 does not match" in notes[0]
