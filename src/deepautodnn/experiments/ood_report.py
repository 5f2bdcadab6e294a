"""Out-of-distribution figures and their Markdown: AUROC, the false-positive rate at 95% true
positives, and detection rates, from unknown scores of in-distribution and foreign images.

`benchmarks/ood.py` computes the scores and writes the JSON; `ood_markdown` renders the README's
tables from that JSON alone, so the two can't disagree.
"""

from __future__ import annotations

import numpy as np


def separation(in_scores: np.ndarray, out_scores: np.ndarray) -> dict:
    """How well a score (larger = stranger) separates foreign images (positives) from in-distribution
    ones: AUROC, and the share of in-distribution images flagged at the threshold that catches 95%
    of the foreign ones (FPR at 95% TPR)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    s = np.r_[in_scores, out_scores].astype(np.float64)
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95)])}


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def ood_markdown(result: dict) -> str:
    """The benchmark's JSON as three Markdown tables: in-distribution sets, foreign sets with the
    fused detector, and every detector alone (AUROC against the Fashion-MNIST test images)."""
    lines = [
        f"Backend `{result['backend']}`, calibrated false-alarm rate {_pct(result['false_alarm_rate'])}, "
        f"seed {result['seed']}.",
        "",
        "| in-distribution set | n | accuracy | flagged unknown |",
        "|---|---:|---:|---:|",
    ]
    for name, row in result["in_distribution"].items():
        lines.append(f"| {name} | {row['n']} | {_pct(row['accuracy'])} | {_pct(row['flagged_unknown'])} |")
    lines += [
        "",
        "| foreign set | n | detected (fused) | AUROC | FPR at 95% TPR | AUROC vs all in-distribution |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["foreign"].items():
        fused = row["detectors"]["fused"]
        lines.append(
            f"| {name} | {row['n']} | {_pct(fused['detected'])} | {fused['auroc']:.3f} | "
            f"{_pct(fused['fpr_at_95_tpr'])} | {fused['auroc_vs_all_in_distribution']:.3f} |"
        )
    detectors = list(next(iter(result["foreign"].values()))["detectors"])
    lines += [
        "",
        "AUROC of each detector alone (against the test images), and in brackets its detection rate "
        "at its own calibrated threshold:",
        "",
        "| foreign set | " + " | ".join(detectors) + " |",
        "|---|" + "---:|" * len(detectors),
    ]
    for name, row in result["foreign"].items():
        cells = [f"{row['detectors'][d]['auroc']:.3f} ({_pct(row['detectors'][d]['detected'])})" for d in detectors]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    fa = result["in_distribution"]
    lines += [
        "",
        "False alarms of each detector alone at its own threshold: "
        + ", ".join(
            f"{d} {_pct(np.mean([row['flagged_alone'][d] for row in fa.values()]))}" for d in detectors if d != "fused"
        )
        + " (mean over the in-distribution sets).",
    ]
    return "\n".join(lines) + "\n"


def variants_markdown(result: dict) -> str:
    """`benchmarks/photo_variants.py`'s JSON as a table: accuracy per photo variant against the arrays."""
    base = result["in_memory"]["accuracy"]
    lines = [
        f"{result['n_images']} {result['split']} images per variant, generator seed {result['seed']}; "
        f"the same images as arrays: {_pct(base)}.",
        "",
        "| variant | accuracy | vs the arrays | same label as the array |",
        "|---|---:|---:|---:|",
    ]
    for name, row in result["variants"].items():
        lines.append(
            f"| {name} | {_pct(row['accuracy'])} | {100 * row['accuracy_minus_in_memory']:+.1f} | "
            f"{_pct(row['agreement_with_in_memory'])} |"
        )
    return "\n".join(lines) + "\n"
