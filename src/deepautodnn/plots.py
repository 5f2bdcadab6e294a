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
    """Loss (left) and accuracy / reconstruction MSE (right) per epoch, one line per stage."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    for stage in stages:
        sr = [r for r in rows if r["stage"] == stage]
        epochs = [int(r["epoch"]) for r in sr]
        ax_loss.plot(epochs, [float(r["loss"]) for r in sr], marker=".", label=f"{stage} train loss")
        for key, style in (("train_acc", "-"), ("val_acc", "--")):
            values = [float(r[key]) for r in sr if r.get(key) not in (None, "")]
            if values:
                ax_acc.plot(epochs[: len(values)], values, style, marker=".", label=f"{stage} {key}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Training loss (Fig. 5)", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy (Fig. 6)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
