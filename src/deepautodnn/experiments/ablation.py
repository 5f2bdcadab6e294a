"""Ablations the paper lacks: what the autoencoder pretraining buys, and how that depends on labels.

Three variants of one architecture (a preset's), trained with the same epoch budget:

- `frozen`: autoencoder pretraining, then the DNN on the frozen encoder (the paper's Algorithm 1);
  the DNN gets the preset's DNN and fine-tuning epochs together.
- `finetuned`: autoencoder pretraining, the DNN on the frozen encoder, then end-to-end fine-tuning
  (the preset as it is; for `fast`, the `fast` recipe).
- `scratch`: no pretraining; encoder and DNN trained end to end from random weights for the
  same number of classifier epochs.

Each runs with 100, 1,000, 10,000 or all training labels. The autoencoder always pretrains on all
training images (it reads no labels), once per seed, shared by the pretrained variants. With fewer
labels, the classifier epochs grow by (all labels / labels), at most 20x, so small label sets still
get enough optimiser steps. The label sets are stratified and nested across budgets for one seed.

Model selection must not see more labels than the budget allows, so ablation runs keep each
stage's last epoch instead of the best validation epoch; the validation split is only reported.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from deepautodnn.config import ABLATION_VARIANTS, Config
from deepautodnn.data.transforms import TrainingData, to_device_data
from deepautodnn.inference.evaluate import evaluate_model
from deepautodnn.models.hybrid import build_model
from deepautodnn.training.stages import train_autoencoder, train_classifier
from deepautodnn.utils.files import atomic_write_json, atomic_write_text, read_json
from deepautodnn.utils.runtime import machine_info, provenance, select_device

VARIANTS = ABLATION_VARIANTS
MAX_EPOCH_FACTOR = 20
RESULTS_FILE = "ablation.json"
ROWS_DIR = "rows"  # one JSON per finished (variant, labels, seed) row


def parse_labels(text: str) -> list[int | None]:
    """ "100,1000,all" -> [100, 1000, None]; None means every training label."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            out.append(None)
        elif part.isdigit() and int(part) >= 10:
            out.append(int(part))
        else:
            raise ValueError(f"label budget {part!r} must be 'all' or a whole number >= 10")
    return out


def variant_epochs(cfg: Config, variant: str, n_labels: int, n_train: int) -> dict:
    """Epochs per stage for one variant and label budget (see the module docstring)."""
    t = cfg.train
    factor = min(n_train / n_labels, MAX_EPOCH_FACTOR)
    classifier = {
        "frozen": (t.dnn_epochs + t.finetune_epochs, 0),
        "finetuned": (t.dnn_epochs, t.finetune_epochs),
        "scratch": (0, t.dnn_epochs + t.finetune_epochs),
    }[variant]
    dnn, finetune = (math.ceil(e * factor) for e in classifier)
    return {"ae": t.ae_epochs if variant != "scratch" else 0, "dnn": dnn, "finetune": finetune}


def labelled_subset(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of n stratified training labels; smaller budgets are subsets of larger ones."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    # One random order per class; a budget takes each class's first n/k, so budgets nest.
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    take = n // len(classes)
    if take < 1:
        raise ValueError(f"a budget of {n} labels is fewer than one per class")
    return np.sort(np.concatenate([per_class[c][:take] for c in classes]))


def _row_key(variant: str, n_labels: int | None, seed: int) -> str:
    return f"{variant}/{n_labels or 'all'}/seed{seed}"


def run_ablation(
    cfg: Config,
    out_dir: str | Path,
    *,
    seeds=(0, 1, 2),
    variants=VARIANTS,
    label_budgets=(100, 1000, 10000, None),
    data_dir=None,
    device: str = "auto",
    train_limit: int | None = None,
    deadline_seconds: float | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Train every (seed, variant, label budget) row not already saved in OUT; test each.

        Each finished row is saved as OUT/rows/*.json at once, so an interrupted study resumes where it
    stopped, and processes running other seeds may share OUT.
    """
    from deepautodnn.training.run import load_run_data_from_config

    out_dir = Path(out_dir)
    (out_dir / ROWS_DIR).mkdir(parents=True, exist_ok=True)
    state = {
        "preset": cfg.preset,
        "config": cfg.to_dict(),
        "train_limit": train_limit,
        "max_epoch_factor": MAX_EPOCH_FACTOR,
        "machine": machine_info(),
        **provenance(),
        "rows": _read_rows(out_dir),
    }
    cfg = copy.deepcopy(cfg)
    cfg.train.keep_best_epoch = False
    dev = select_device(device)
    d = load_run_data_from_config(cfg, None, data_dir, train_limit)
    train_idx, test_images, test_labels = d.train_idx, d.test_images, d.test_labels
    full = to_device_data(d.images, d.labels, d.train_idx, d.val_idx, dev)
    start = time.perf_counter()
    quiet = lambda row: None  # noqa: E731  (per-epoch rows are not kept for ablations)
    for seed in seeds:
        # All-label rows first (the main comparison), then the cheap small budgets, then larger ones.
        budgets = sorted(label_budgets, key=lambda n: (n is not None, n or 0))
        pending = [(v, n) for n in budgets for v in variants if _row_key(v, n, seed) not in state["rows"]]
        if not pending:
            continue
        pretrained = None
        for variant, n_labels in pending:
            if deadline_seconds is not None and time.perf_counter() - start > deadline_seconds:
                echo("deadline reached; the remaining rows are left for a later call")
                return _finish(state, out_dir)
            t0 = time.perf_counter()
            epochs = variant_epochs(cfg, variant, n_labels or len(train_idx), len(train_idx))
            model = build_model(cfg, seed=seed, device=dev)
            if epochs["ae"]:
                if pretrained is None:
                    # Pretraining reads no labels, so one autoencoder per seed serves every budget.
                    tcfg = copy.deepcopy(cfg.train)
                    tcfg.ae_epochs = epochs["ae"]
                    train_autoencoder(model, full, tcfg, seed=seed, device=dev, log=quiet)
                    pretrained = copy.deepcopy(model.autoencoder.state_dict())
                else:
                    model.autoencoder.load_state_dict(pretrained)
            chosen = labelled_subset(full.y_train.cpu().numpy(), n_labels, seed)
            sel = torch.as_tensor(chosen, device=full.x_train.device)
            data = TrainingData(full.x_train[sel], full.y_train[sel], full.x_val, full.y_val)
            tcfg = copy.deepcopy(cfg.train)
            tcfg.dnn_epochs, tcfg.finetune_epochs = epochs["dnn"], epochs["finetune"]
            val_acc = None
            for stage in ("dnn", "finetune"):
                if epochs[stage]:
                    val_acc = train_classifier(model, data, tcfg, stage=stage, seed=seed, device=dev, log=quiet)[
                        "val_acc"
                    ]
            model = model.to(memory_format=torch.contiguous_format).eval()
            test = evaluate_model(model, test_images, test_labels, device=dev)
            row = {
                "variant": variant,
                "labels": n_labels or len(train_idx),
                "all_labels": n_labels is None,
                "seed": seed,
                "epochs": epochs,
                "test_accuracy": test["accuracy"],
                "val_accuracy": val_acc,
                "seconds": time.perf_counter() - t0,
            }
            key = _row_key(variant, n_labels, seed)
            atomic_write_json(out_dir / ROWS_DIR / (key.replace("/", "-") + ".json"), row)
            state["rows"][key] = row
            echo(
                f"{_row_key(variant, n_labels, seed)}: test {row['test_accuracy'] * 100:.2f}%  "
                f"val {val_acc * 100 if val_acc is not None else float('nan'):.2f}%  {row['seconds']:.0f}s"
            )
            _finish(state, out_dir)
    return _finish(state, out_dir)


def summarize(rows: dict) -> list[dict]:
    """Mean and sample std of test accuracy per (variant, label budget), over the seeds present."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows.values():
        groups.setdefault((row["variant"], row["labels"]), []).append(row)
    out = []
    for (variant, labels), group in sorted(groups.items(), key=lambda kv: (VARIANTS.index(kv[0][0]), kv[0][1])):
        accs = [r["test_accuracy"] for r in group]
        out.append(
            {
                "variant": variant,
                "labels": labels,
                "seeds": sorted(r["seed"] for r in group),
                "test_accuracy_mean": statistics.mean(accs),
                "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
                "seconds_mean": statistics.mean(r["seconds"] for r in group),
            }
        )
    return out


def ablation_table(state: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per variant, one column per label budget, "mean% ± std (n=seeds)"."""
    summary = summarize(state["rows"])
    budgets = sorted({s["labels"] for s in summary})
    cells = {(s["variant"], s["labels"]): s for s in summary}
    rows = []
    for variant in VARIANTS:
        if not any((variant, b) in cells for b in budgets):
            continue
        row = [variant]
        for b in budgets:
            s = cells.get((variant, b))
            if s is None:
                row.append("—")
                continue
            std = "" if s["test_accuracy_std"] is None else f" ± {s['test_accuracy_std'] * 100:.2f}"
            row.append(f"{s['test_accuracy_mean'] * 100:.2f}%{std} (n={len(s['seeds'])})")
        rows.append(row)
    return ["Variant"] + [f"{b:,} labels" for b in budgets], rows


def _read_rows(out_dir: Path) -> dict:
    rows = {}
    for p in sorted((out_dir / ROWS_DIR).glob("*.json")):
        row = read_json(p)
        rows[_row_key(row["variant"], None if row["all_labels"] else row["labels"], row["seed"])] = row
    return rows


def _finish(state: dict, out_dir: Path) -> dict:
    # Rebuilt from the row files, so several processes (one per seed) can share one folder.
    state["rows"] = _read_rows(out_dir)
    state["summary"] = summarize(state["rows"])
    atomic_write_json(out_dir / RESULTS_FILE, state)
    from deepautodnn.experiments.markdown import Heading, Paragraph, Table, render_markdown

    text = render_markdown(
        [
            Heading(f"Ablation: preset {state['preset']}", 1),
            Paragraph("Test accuracy, mean ± sample std over seeds (n = number of seeds)."),
            Table(*ablation_table(state)),
        ]
    )
    atomic_write_text(out_dir / "ablation.md", text)
    return state


def load_ablation(out_dir: str | Path) -> dict:
    return read_json(Path(out_dir) / RESULTS_FILE)


__all__ = [
    "run_ablation",
    "summarize",
    "ablation_table",
    "load_ablation",
    "variant_epochs",
    "labelled_subset",
    "parse_labels",
    "VARIANTS",
]
