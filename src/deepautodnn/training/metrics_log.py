"""`metrics.csv`: one row per epoch of every stage, written as training goes."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from deepautodnn.utils.files import atomic_write_text

METRICS_COLUMNS = ("stage", "epoch", "loss", "train_acc", "val_acc", "val_mse", "lr", "seconds")


class MetricsLog:
    """metrics.csv in the run directory: one row per epoch, appended as it finishes."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None):
        self.path = path
        self.echo = echo

    def keep(self, stages: set[str], current: str | None = None, up_to_epoch: int = 0) -> None:
        """Keep the rows of finished `stages` and of `current` up to its checkpoint's epoch; drop
        the rest, including a line cut short by a kill (used when resuming)."""

        def finished(row) -> bool:
            if None in row or any(row.get(k) is None for k in METRICS_COLUMNS):  # a cut or garbled line
                return False
            if row["stage"] in stages:
                return True
            return row["stage"] == current and row["epoch"].isdigit() and int(row["epoch"]) <= up_to_epoch

        rows = [r for r in self.read() if finished(r)]
        text = io.StringIO()
        writer = csv.DictWriter(text, METRICS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def __call__(self, row: dict) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, METRICS_COLUMNS, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in METRICS_COLUMNS})
            f.flush()
        if self.echo:
            parts = [f"{row['stage']} epoch {row['epoch']}", f"loss {row['loss']:.4f}"]
            for key in ("train_acc", "val_acc", "val_mse"):
                if row.get(key) is not None:
                    parts.append(f"{key} {row[key]:.4f}")
            parts.append(f"{row['seconds']:.1f}s")
            self.echo("  ".join(parts))


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
