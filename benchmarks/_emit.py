"""What every benchmark does last: print its JSON, and write it to a file when asked; and the
provenance each results file records (`utils.runtime.provenance`: command, commit, date, version)."""

from __future__ import annotations

import json
from pathlib import Path

from deepautodnn.utils.runtime import provenance  # noqa: F401  (re-exported for the benchmarks)


def emit_json(result: dict, path: str | None = None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
