"""`deepautodnn serve` through `deepautodnn.cli.main`, exactly as the console script runs it, that
on SIGUSR1 writes the names in its `sys.modules`, one a line, to MODULES_FILE: what the serving
process has loaded. tests/serve/test_app.py uses it to check that serving never loads the trainer.

    python tests/helpers/serve_recording_modules.py MODULES_FILE serve MODEL_DIR [serve options]
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def record_modules_on_signal(path: Path) -> None:
    def record(signum, frame) -> None:
        names = sorted(sys.modules.copy())  # a copy: another thread may be importing
        partial = path.with_name(path.name + ".partial")
        partial.write_text("\n".join(names) + "\n")
        os.replace(partial, path)  # whole or absent: the reader never sees half a list

    signal.signal(signal.SIGUSR1, record)  # uvicorn handles SIGINT and SIGTERM only


if __name__ == "__main__":
    record_modules_on_signal(Path(sys.argv[1]))
    from deepautodnn.cli import main

    raise SystemExit(main(sys.argv[2:]))
