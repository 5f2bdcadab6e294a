"""Evaluation: accuracy, per-class metrics with the paper's formulas (Sec. IV-B, Table V), the
confusion matrix (Fig. 4), and their JSON and Markdown forms.
"""

from __future__ import annotations

import numpy as np
import torch

from deepautodnn.models.hybrid import DeepAutoDNN, predict_proba_u8
from deepautodnn.paper import TEST_ACCURACY as PAPER_TEST_ACCURACY


def predict_proba(
    model: DeepAutoDNN, images_u8: np.ndarray | torch.Tensor, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Class probabilities (N, num_classes) for uint8 images (N, 28, 28) or (N, 1, 28, 28).

    Moves the model to `device` and into eval mode, then runs the one path, `predict_proba_u8`."""
    model = model.to(device).eval()
    return predict_proba_u8(model, images_u8, batch_size=batch_size, device=device).numpy()


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def classification_metrics(y_true, y_pred, class_names) -> dict:
    """Accuracy, per-class precision/recall(sensitivity)/specificity/F1, macro averages, counts."""
    from sklearn.metrics import confusion_matrix

    k = len(class_names)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(k))  # rows: true, cols: predicted
    total = cm.sum()
    per_class = {}
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = total - tp - fn - fp
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)  # the paper's sensitivity
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "specificity": _ratio(tn, tn + fp),
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": int(cm[i].sum()),
        }
    macro = {
        m: float(np.mean([v[m] for v in per_class.values()])) for m in ("precision", "recall", "specificity", "f1")
    }
    return {
        "accuracy": _ratio(np.trace(cm), total),
        "n": int(total),
        "class_names": list(class_names),
        "per_class": per_class,
        "macro": macro,
        "confusion_matrix": cm.tolist(),
    }


def evaluate_model(
    model: DeepAutoDNN, images_u8, labels, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> dict:
    proba = predict_proba(model, images_u8, batch_size, device)
    return classification_metrics(labels, proba.argmax(1), model.config.class_names)


def metrics_markdown(metrics: dict, title: str = "Test-set evaluation") -> str:
    """A Markdown report in the shape of the paper's Table V, plus accuracy and the matrix."""
    lines = [
        f"## {title}",
        "",
        f"Accuracy: **{metrics['accuracy'] * 100:.2f}%** on {metrics['n']} images "
        f"(paper, Table IV: {PAPER_TEST_ACCURACY * 100:.2f}%).",
        "",
        "| Label | Precision | Recall | Specificity | F1-score | Support |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(
            f"| {name} | {m['precision'] * 100:.1f} | {m['recall'] * 100:.1f} | "
            f"{m['specificity'] * 100:.1f} | {m['f1'] * 100:.1f} | {m['support']} |"
        )
    mac = metrics["macro"]
    lines.append(
        f"| **macro** | {mac['precision'] * 100:.1f} | {mac['recall'] * 100:.1f} | "
        f"{mac['specificity'] * 100:.1f} | {mac['f1'] * 100:.1f} | {metrics['n']} |"
    )
    names = metrics["class_names"]
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted):",
        "",
        "| true \\ pred | " + " | ".join(str(i) for i in range(len(names))) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
