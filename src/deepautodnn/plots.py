"""Figures: the confusion matrix (paper Fig. 4) and per-stage loss and accuracy curves (Figs. 5-6).

matplotlib is imported inside the functions so that importing deepautodnn stays light.
"""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(metrics: dict, path: str | Path) -> Path:
    plt = _pyplot()
    cm, names = metrics["confusion_matrix"], metrics["class_names"]
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(f"Confusion matrix (accuracy {metrics['accuracy'] * 100:.2f}%)")
    peak = max(max(row) for row in cm) or 1
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_training_curves(rows: list[dict], path: str | Path) -> Path:
    """Per-epoch curves from metrics.csv rows: the autoencoder's reconstruction MSE (stage 1),
    the classifier's loss (Fig. 5) and its train/validation accuracy (Fig. 6), one line per stage."""
    plt = _pyplot()
    fig, (ax_ae, ax_loss, ax_acc) = plt.subplots(1, 3, figsize=(15, 4))

    def series(stage_rows, key):
        pts = [(int(r["epoch"]), float(r[key])) for r in stage_rows if r.get(key) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    for stage in dict.fromkeys(r["stage"] for r in rows):
        sr = [r for r in rows if r["stage"] == stage]
        if stage == "ae":
            ax_ae.plot(*series(sr, "loss"), marker=".", label="train MSE")
            ax_ae.plot(*series(sr, "val_mse"), "--", marker=".", label="validation MSE")
            continue
        ax_loss.plot(*series(sr, "loss"), marker=".", label=f"{stage} train loss")
        ax_acc.plot(*series(sr, "train_acc"), marker=".", label=f"{stage} train")
        ax_acc.plot(*series(sr, "val_acc"), "--", marker=".", label=f"{stage} validation")
    ax_ae.set(xlabel="epoch", ylabel="MSE", title="Autoencoder reconstruction (stage 1)")
    ax_loss.set(xlabel="epoch (of each stage)", ylabel="cross-entropy", title="Classifier loss (Fig. 5)")
    ax_acc.set(xlabel="epoch (of each stage)", ylabel="accuracy", title="Classifier accuracy (Fig. 6)")
    for ax in (ax_ae, ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
