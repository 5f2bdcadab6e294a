"""Interrupt a `deepautodnn train` process on purpose, for tests/training/test_resume.py and
benchmarks/kill_resume.py: kill -9 at a random moment or frozen in the middle of a save, or
Ctrl-C. After each, the newest checkpoint of the run must load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deepautodnn.training.state import Checkpointer

PAUSING_TRAIN = ("-m", "deepautodnn.experiments.pausing_train")  # `deepautodnn train` with a fault hook


@dataclass
class Interruption:
    how: str  # "random", "mid-save-tensors", "mid-save-json" or "ctrl-c"
    delay: float = 0.0  # random kinds: seconds after the next new checkpoint appears
    nth_save: int = 1  # mid-save kinds: freeze in this process's n-th save of that file

    @property
    def signal(self) -> int:
        return signal.SIGINT if self.how == "ctrl-c" else signal.SIGKILL

    @property
    def pause_at(self) -> str:
        kind = {"mid-save-tensors": "safetensors", "mid-save-json": "json"}.get(self.how)
        return f"{kind}:{self.nth_save}" if kind else "safetensors:0"  # 0: never freezes


def checkpoint_names(run: Path) -> list[str]:
    return [p.stem for p in Checkpointer(run / "checkpoints").complete()]


def interrupt(args: list[str], run: Path, what: Interruption, workdir: Path, timeout: float = 300.0) -> dict:
    """Start `deepautodnn ARGS` (through the pausing helper), interrupt it as `what` says, and
    report: how it ended, and the newest checkpoint, which must load (`loads`)."""
    marker = workdir / "paused"
    marker.unlink(missing_ok=True)
    before = set(checkpoint_names(run)) if run.exists() else set()
    env = {**os.environ, "PAUSE_AT": what.pause_at, "PAUSE_MARKER": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, *PAUSING_TRAIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    ready = marker.exists if what.how.startswith("mid-save") else (lambda: bool(set(checkpoint_names(run)) - before))
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is None and not what.how.startswith("mid-save"):
        time.sleep(what.delay)
    ended_early = proc.poll() is not None
    if not ended_early:
        proc.send_signal(what.signal)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    record = {
        "how": what.how,
        "signal": signal.Signals(what.signal).name,
        "ended_before_signal": ended_early,
        "exit_code": proc.returncode,
        "stderr_tail": err[-1500:],
    }
    names = Checkpointer(run / "checkpoints").complete()
    if names:
        state = Checkpointer(run / "checkpoints").load(names[-1])  # raises if the newest one is damaged
        record.update(loads=True, newest=[state.meta["stage"], state.meta["epoch"], state.meta["batch"]])
    return record
