"""What every benchmark does last: print its JSON, and write it to a file when asked; and the
provenance each results file records (its command and commit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def provenance() -> dict:
    """The command that made a result and the commit it ran at (short hash; empty outside git)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"command": "python " + " ".join(sys.argv), "commit": commit.stdout.strip()}


def emit_json(result: dict, path: str | None = None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
