"""`deepautodnn train ARGS` with one fault injected, for tests/test_resume.py.

With PAUSE_AT=KIND:N in the environment (KIND is "safetensors" or "json"), the process freezes in
its N-th save of a training-state file of that kind: the temporary file is written but not yet
synced or renamed. It then creates the file $PAUSE_MARKER, so the test knows to kill it there,
in the middle of a save.
"""

import os
import sys
import time
from pathlib import Path

from deepautodnn.cli import main

kind, nth = os.environ["PAUSE_AT"].split(":")
real_fsync = os.fsync
saves = 0


def fsync_that_freezes(fd: int) -> None:
    global saves
    name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    if name.startswith(".state-") and f".{kind}." in name:
        saves += 1
        if saves == int(nth):
            Path(os.environ["PAUSE_MARKER"]).touch()
            time.sleep(600)  # until killed
    real_fsync(fd)


os.fsync = fsync_that_freezes
sys.exit(main(sys.argv[1:]))
