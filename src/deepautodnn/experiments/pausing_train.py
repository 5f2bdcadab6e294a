"""`deepautodnn train ARGS` with one fault injected, for tests/training/test_resume.py and benchmarks/kill_resume.py.

    PAUSE_AT=KIND:N PAUSE_MARKER=FILE python -m deepautodnn.experiments.pausing_train train ...

With PAUSE_AT=KIND:N in the environment (KIND is "safetensors" or "json"), the process freezes in
its N-th save of a training-state file of that kind: the temporary file is written but not yet
synced or renamed. It then creates the file $PAUSE_MARKER, so the caller knows to kill it there,
in the middle of a save. The command runs as `python -m deepautodnn` would run it, in this process.
"""

from __future__ import annotations

import os
import runpy
import time
from pathlib import Path


def install_freezing_fsync(kind: str, nth: int, marker: Path) -> None:
    """Replace os.fsync with one that freezes in the nth save of a `.state-*.KIND.*` file."""
    real_fsync = os.fsync
    saves = 0

    def fsync_that_freezes(fd: int) -> None:
        nonlocal saves
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".state-") and f".{kind}." in name:
            saves += 1
            if saves == nth:
                marker.touch()
                time.sleep(600)  # until killed
        real_fsync(fd)

    os.fsync = fsync_that_freezes


if __name__ == "__main__":
    kind, nth = os.environ["PAUSE_AT"].split(":")
    install_freezing_fsync(kind, int(nth), Path(os.environ["PAUSE_MARKER"]))
    runpy.run_module("deepautodnn", run_name="__main__", alter_sys=True)  # the command, as a program
