"""Crash-safe training state: a checkpoint after every epoch, enough to continue bit for bit.

Each checkpoint is a pair of files in RUN_DIR/checkpoints/, named for its place in the run
(`state-<stage index>-<stage>-e<finished epochs>-b<batches into the next epoch>`):

- `.safetensors`: every tensor: the model, the best epoch's weights, the optimiser's moments and
  steps, the states of the torch random generators;
- `.json`: everything else: stage, epoch and batch, the best score so far, the optimiser's and the
  schedule's settings, the python and NumPy random states, the epoch's running sums, and the
  SHA-256 of the tensors file.

The tensors file is written first and the JSON second, each atomically (temporary file, fsync,
rename), so a pair exists only once both are whole: a kill at any moment, even mid-save, leaves
the previous pair as it was. The two newest pairs are kept, and loading takes the newest one that
verifies, so a damaged file costs one epoch, not the run. Only safetensors and JSON are read.

`GracefulStop` turns Ctrl-C (SIGINT) and SIGTERM into "finish this batch, save, stop".
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as save_safetensors_bytes

from deepautodnn.config import STAGES
from deepautodnn.errors import DeepAutoDNNError, ModelFileError, TrainingInterrupted  # noqa: F401  (re-exported)
from deepautodnn.models.serialization import parse_safetensors, plain_tensors
from deepautodnn.utils.files import atomic_write_bytes, atomic_write_json, read_json, read_verified, sha256_hex

STATE_PREFIX = "state-"
KEEP = 2  # checkpoint pairs kept: the newest, and one to fall back on


class NonFiniteLossError(DeepAutoDNNError, FloatingPointError):
    """The loss became NaN or infinite; the checkpoints saved before it are kept."""


@dataclass
class TrainingState:
    """One loaded checkpoint: `meta` from the JSON, `tensors` from the safetensors file."""

    meta: dict
    tensors: dict[str, torch.Tensor]
    path: Path  # the JSON file

    @property
    def stage(self) -> str:
        return self.meta["stage"]

    @property
    def position(self) -> str:
        where = f"stage {self.stage}, after epoch {self.meta['epoch']}"
        return where + (f" and {self.meta['batch']} batches of the next" if self.meta["batch"] else "")

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors saved under `prefix.`, with the prefix taken off."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def load_model(self, model: torch.nn.Module) -> None:
        weights = self.section("model")
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as err:
            raise ModelFileError(
                f"{self.path}: weights do not match the run's config ({str(err).splitlines()[0]})"
            ) from None


def _stem(stage: str, epoch: int, batch: int) -> str:
    # Zero-padded so that names sort in the order the states were written.
    return f"{STATE_PREFIX}{STAGES.index(stage)}-{stage}-e{epoch:05d}-b{batch:07d}"


class Checkpointer:
    """Writes and finds the training-state pairs of one run directory's `checkpoints/`."""

    def __init__(self, directory: str | Path, enabled: bool = True):
        self.directory = Path(directory)
        self.enabled = enabled  # False on torchrun ranks other than 0: they train but don't write

    def save(self, *, stage: str, epoch: int, batch: int, tensors: dict[str, torch.Tensor], meta: dict) -> Path | None:
        if not self.enabled:
            return None
        stem = _stem(stage, epoch, batch)
        data = save_safetensors_bytes(plain_tensors(tensors), metadata={"format": "deepautodnn-training-state"})
        atomic_write_bytes(self.directory / f"{stem}.safetensors", data)
        meta = {**meta, "stage": stage, "epoch": epoch, "batch": batch, "tensors_sha256": sha256_hex(data)}
        atomic_write_json(self.directory / f"{stem}.json", meta)  # the pair is complete from here on
        self.prune()
        return self.directory / f"{stem}.json"

    def complete(self) -> list[Path]:
        """The JSON files of complete pairs, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob(f"{STATE_PREFIX}*.json") if p.with_suffix(".safetensors").exists())

    def prune(self) -> None:
        """Keep the KEEP newest pairs; remove older ones and leftovers of interrupted saves."""
        keep = {p.stem for p in self.complete()[-KEEP:]}
        for path in self.directory.iterdir():
            leftover = path.name.startswith(f".{STATE_PREFIX}") and path.name.endswith(".tmp")
            old = path.name.startswith(STATE_PREFIX) and path.stem not in keep
            if leftover or old:
                path.unlink(missing_ok=True)

    def load(self, json_path: Path) -> TrainingState:
        meta = read_json(json_path)
        path = json_path.with_suffix(".safetensors")
        digest = meta.get("tensors_sha256")
        if not isinstance(digest, str) or not digest:
            raise ModelFileError(f"{json_path}: no tensors_sha256, so {path.name} can't be verified")
        data = read_verified(path, digest=digest)
        return TrainingState(meta, parse_safetensors(data, path), json_path)

    def latest(self, echo: Callable[[str], None] = lambda _: None) -> TrainingState | None:
        """The newest checkpoint that loads and verifies; a damaged one is reported and skipped."""
        for json_path in reversed(self.complete()):
            try:
                return self.load(json_path)
            except ModelFileError as err:
                echo(f"skipping a damaged checkpoint: {err}")
        return None


def rng_meta() -> dict:
    """The python and NumPy global random states as JSON."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python_rng": [version, list(mt), gauss], "numpy_rng": [name, keys.tolist(), pos, has_gauss, cached]}


def restore_rng_meta(meta: dict) -> None:
    version, mt, gauss = meta["python_rng"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """The optimiser's per-parameter state as `optim.<param>.<name>` tensors, and its param groups."""
    state = optimizer.state_dict()
    tensors = {
        f"optim.{index}.{name}": value if torch.is_tensor(value) else torch.tensor(value)
        for index, per_param in state["state"].items()
        for name, value in per_param.items()
    }
    return tensors, json.loads(json.dumps(state["param_groups"]))  # tuples -> lists, as JSON keeps them


def restore_optimizer(optimizer: torch.optim.Optimizer, state: TrainingState) -> None:
    per_param: dict[int, dict] = {}
    for key, value in state.section("optim").items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state.meta["optimizer_groups"]]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    # Saved tensors come back contiguous; give each moment its parameter's memory layout again
    # (channels_last weights), as the fused kernels' results depend on it.
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    optimizer.state[param][name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


class GracefulStop:
    """While active, Ctrl-C (SIGINT) and SIGTERM ask training to save and stop after the current
    batch instead of dying mid-step; a second Ctrl-C stops at once (the last checkpoint stays)."""

    def __init__(self, echo: Callable[[str], None] = lambda _: None):
        self.echo = echo
        self.requested = False
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.echo(
            f"{signal.Signals(signum).name}: saving after this batch, then stopping "
            "(Ctrl-C again to stop at once, keeping the last epoch's checkpoint)"
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
