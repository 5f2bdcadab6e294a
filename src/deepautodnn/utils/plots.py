"""Figures: the confusion matrix (paper Fig. 4), per-stage loss and accuracy curves (Figs. 5-6), and
the report's extra figures: reconstructions, confident mistakes, a 2-D map of the latent space.
Each takes a path or a binary file object and writes a PNG.

matplotlib is imported inside the functions so that importing deepautodnn stays light.
"""

from __future__ import annotations

from deepautodnn.utils.extras import missing_extra


def pyplot():
    """matplotlib's pyplot, drawing to files only; a clear error if the [report] extra is missing."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise missing_extra("report", "drawing figures", "matplotlib") from None

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(metrics: dict, path) -> None:
    plt = pyplot()
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
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > peak / 2 else "black")
    _save(fig, path, 120)


def plot_training_curves(rows: list[dict], path) -> None:
    """Per-epoch curves from metrics.csv rows: the autoencoder's reconstruction MSE (stage 1),
    the classifier's loss (Fig. 5) and its train/validation accuracy (Fig. 6), one line per stage."""
    plt = pyplot()
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
    _save(fig, path, 110)


def _save(fig, path, dpi: int) -> None:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")  # path may be a file object
    plt.close(fig)


def plot_reconstructions(originals, reconstructions, labels, class_names, path) -> None:
    """Pairs of rows: test images (top) and the autoencoder's reconstructions (bottom)."""
    plt = pyplot()
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for i in range(n):
        for row, img in ((0, originals[i]), (1, reconstructions[i])):
            ax = axes[row][i]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][i].set_title(class_names[labels[i]], fontsize=7)
    axes[0][0].set_ylabel("input", fontsize=8)
    axes[1][0].set_ylabel("decoded", fontsize=8)
    _save(fig, path, 110)


def plot_mistakes(images, true, pred, confidence, class_names, path, columns: int = 8) -> None:
    """A gallery of misclassified images, titled 'true -> predicted (confidence)'."""
    plt = pyplot()
    n = max(1, len(images))
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(len(images)):
        ax = axes.ravel()[i]
        ax.imshow(images[i], cmap="gray")
        ax.set_title(f"{class_names[true[i]]}\n-> {class_names[pred[i]]} ({confidence[i] * 100:.0f}%)", fontsize=7)
    _save(fig, path, 110)


def plot_latent_map(points, labels, class_names, path, title: str) -> None:
    """A 2-D scatter of encoder codes (already projected), coloured by true class."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for k, name in enumerate(class_names):
        sel = labels == k
        ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.6, color=cmap(k % 10), label=name)
    ax.set(title=title, xlabel="component 1", ylabel="component 2")
    ax.legend(markerscale=3, fontsize=7, loc="best")
    _save(fig, path, 110)
