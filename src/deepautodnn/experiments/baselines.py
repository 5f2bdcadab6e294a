"""Comparators for Table IV, trained and scored on our own split through our own evaluation code.

Every comparator sees the same training / validation / test images as a DeepAutoDNN run: the
training split minus the stratified validation split (`sources.load_run_data`), and the official
test split, touched once, after the hyper-parameters are fixed.

- scikit-learn comparators try each setting of a small grid on a stratified subset of the
  training split, keep the one with the best validation accuracy, then refit it on the whole
  training split.
- torch comparators train for a fixed number of epochs (bf16 autocast and channels_last where the
  CPU supports them) and keep the epoch with the best validation accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepautodnn.config import CLASS_NAMES, TrainConfig, get_preset
from deepautodnn.inference.evaluate import classification_metrics
from deepautodnn.models import comparators
from deepautodnn.utils.extras import missing_extra
from deepautodnn.utils.files import atomic_write_json, read_json
from deepautodnn.utils.runtime import machine_info, provenance, seed_everything

# --- features -------------------------------------------------------------------------------------


def pixel_features(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0  # (N, 784) in [0, 1]


def hog_features(images: np.ndarray) -> np.ndarray:
    """HOG with 9 orientations, 7x7-pixel cells and 2x2-cell blocks: (N, 324)."""
    try:
        from skimage.feature import hog
    except ModuleNotFoundError:
        raise missing_extra("report", "the HOG and LBP baselines", "scikit-image") from None

    return np.stack([hog(im, orientations=9, pixels_per_cell=(7, 7), cells_per_block=(2, 2)) for im in images]).astype(
        np.float32
    )


def lbp_features(images: np.ndarray, grid: int = 4) -> np.ndarray:
    """Uniform LBP codes (8 neighbours, radius 1), histogrammed over a 4x4 grid of cells: (N, 160)."""
    try:
        from skimage.feature import local_binary_pattern
    except ModuleNotFoundError:
        raise missing_extra("report", "the HOG and LBP baselines", "scikit-image") from None

    n_codes = 10  # P + 2 codes for the "uniform" method with P = 8
    out = np.empty((len(images), grid * grid * n_codes), np.float32)
    for i, im in enumerate(images):
        codes = local_binary_pattern(im, 8, 1, method="uniform").astype(np.int64)  # (28, 28)
        h, w = codes.shape
        cells = codes.reshape(grid, h // grid, grid, w // grid).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
        hist = np.stack([np.bincount(c, minlength=n_codes) for c in cells])  # (cells, codes)
        out[i] = (hist / cells.shape[1]).ravel()
    return out


def hog_lbp_features(images: np.ndarray) -> np.ndarray:
    return np.hstack([hog_features(images), lbp_features(images)])  # (N, 484)


# --- the comparators --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SklearnComparator:
    name: str
    title: str
    paper_row: str | None  # the Table IV row it rebuilds, None for the classic pixel baselines
    features: Callable[[np.ndarray], np.ndarray]
    make: Callable[..., object]  # keyword hyper-parameters -> an unfitted estimator
    grid: tuple[dict, ...]
    search_size: int = 10_000  # training images per grid point; the chosen setting refits on all
    kind: str = field(default="sklearn", init=False)


@dataclass(frozen=True)
class TorchComparator:
    name: str
    title: str
    paper_row: str | None
    make: Callable[[], torch.nn.Module]
    epochs: int
    lr: float = 2e-3
    batch_size: int = 128
    weight_decay: float = 5e-4
    loss: str = "cross_entropy"  # or "squared_hinge" (an L2-SVM output layer)
    kind: str = field(default="torch", init=False)


def _svc(C: float):
    from sklearn.svm import SVC

    return SVC(C=C, kernel="rbf", gamma="scale", cache_size=2000)


def _logreg(C: float, scale: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=C, max_iter=300)
    return make_pipeline(StandardScaler(), model) if scale else model


def _forest(max_features):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, max_features=max_features, n_jobs=-1, random_state=0)


def _mlp(alpha: float):
    from sklearn.neural_network import MLPClassifier

    # early_stopping holds out 10% of the *training* split; the test split is never seen.
    return MLPClassifier(hidden_layer_sizes=(256,), alpha=alpha, max_iter=40, early_stopping=True, random_state=0)


COMPARATORS = {
    c.name: c
    for c in (
        SklearnComparator(
            "hog_svm", "HOG + SVM (RBF)", "HOG + SVM [18]", hog_features, lambda C: _svc(C), ({"C": 1.0}, {"C": 10.0})
        ),
        SklearnComparator(
            "hog_lbp_softmax",
            "HOG + LBP + softmax",
            "HOG + LBP [21]",
            hog_lbp_features,
            lambda C: _logreg(C, scale=True),
            ({"C": 0.01}, {"C": 0.1}, {"C": 1.0}),
        ),
        TorchComparator("lstm", "LSTM over rows", "LSTM [19]", comparators.RowLSTM, epochs=12),
        TorchComparator("convnet", "ConvNet", "ConvNet [13]", comparators.ConvNet, epochs=12),
        TorchComparator(
            "cnn_bn_skip",
            "CNN + BatchNorm + skip",
            "CNN2 + BatchNorm + Skip [7]",
            comparators.CNNBatchNormSkip,
            epochs=8,
        ),
        TorchComparator("cnn_svm", "CNN-SVM", "CNN-SVM [14]", comparators.CNNSVM, epochs=12, loss="squared_hinge"),
        TorchComparator("vgg_small", "Small VGG", "VGG-11 [12]", comparators.SmallVGG, epochs=8),
        SklearnComparator(
            "pixel_svc", "Pixels + SVC (RBF)", None, pixel_features, lambda C: _svc(C), ({"C": 1.0}, {"C": 10.0})
        ),
        SklearnComparator(
            "random_forest",
            "Pixels + random forest",
            None,
            pixel_features,
            lambda max_features: _forest(max_features),
            ({"max_features": "sqrt"}, {"max_features": 0.1}),
        ),
        SklearnComparator(
            "mlp", "Pixels + MLP", None, pixel_features, lambda alpha: _mlp(alpha), ({"alpha": 1e-4}, {"alpha": 1e-3})
        ),
        SklearnComparator(
            "logreg",
            "Pixels + logistic regression",
            None,
            pixel_features,
            lambda C: _logreg(C, scale=False),
            ({"C": 0.1}, {"C": 1.0}, {"C": 10.0}),
        ),
    )
}


def describe(comp) -> dict:
    """The comparator's fixed hyper-parameters, as saved beside its results."""
    if comp.kind == "sklearn":
        return {"features": comp.features.__name__, "grid": list(comp.grid), "search_size": comp.search_size}
    return {
        "network": comp.make.__name__,
        "epochs": comp.epochs,
        "lr": comp.lr,
        "batch_size": comp.batch_size,
        "weight_decay": comp.weight_decay,
        "loss": comp.loss,
        "optimizer": "AdamW",
        "schedule": "onecycle (linear warm-up, cosine decay)",
    }


# --- running them ---------------------------------------------------------------------------------


@dataclass
class Split:
    """uint8 images (N, 28, 28) and int labels for the three parts every comparator shares."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_split(data_dir=None, train_limit: int | None = None) -> Split:
    from deepautodnn.training.run import load_run_data_from_config

    d = load_run_data_from_config(get_preset("fast"), None, data_dir, train_limit)
    return Split(
        d.images[d.train_idx],
        d.labels[d.train_idx],
        d.images[d.val_idx],
        d.labels[d.val_idx],
        d.test_images,
        d.test_labels,
    )


def _subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed)
    return np.sort(idx)


def _accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def run_sklearn(comp: SklearnComparator, split: Split, seed: int, echo) -> dict:
    start = time.perf_counter()
    f_train, f_val = comp.features(split.x_train), comp.features(split.x_val)
    feature_seconds = time.perf_counter() - start
    sub = _subset(split.y_train, comp.search_size, seed)
    search = []
    start = time.perf_counter()
    for params in comp.grid:
        est = comp.make(**params).fit(f_train[sub], split.y_train[sub])
        search.append({"params": params, "val_accuracy": _accuracy(split.y_val, est.predict(f_val))})
        echo(f"  {comp.name} {params}: val {search[-1]['val_accuracy'] * 100:.2f}%")
    search_seconds = time.perf_counter() - start
    best = max(search, key=lambda r: r["val_accuracy"])
    start = time.perf_counter()
    model = comp.make(**best["params"]).fit(f_train, split.y_train)
    fit_seconds = time.perf_counter() - start
    val_accuracy = _accuracy(split.y_val, model.predict(f_val))
    start = time.perf_counter()
    y_pred = model.predict(comp.features(split.x_test))  # features are part of predicting
    predict_seconds = time.perf_counter() - start
    return {
        "y_pred": y_pred,
        "val_accuracy": val_accuracy,
        "chosen": best["params"],
        "search": search,
        "train_seconds": feature_seconds + search_seconds + fit_seconds,
        "search_seconds": search_seconds,
        "predict_seconds": predict_seconds,
    }


def _squared_hinge(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.multi_margin_loss(scores, y, p=2, margin=1.0)  # one-vs-rest L2-SVM, as CNN-SVM [14]


def run_torch(comp: TorchComparator, split: Split, seed: int, echo, device="cpu", epochs: int | None = None) -> dict:
    from deepautodnn.data.transforms import to_float
    from deepautodnn.training.loop import Precision, StageSpec, fit, map_batches

    tcfg = TrainConfig(
        schedule="onecycle", weight_decay=comp.weight_decay, bf16=True, channels_last=comp.name != "lstm"
    )
    prec = Precision(tcfg, torch.device(device))
    seed_everything(seed)
    net = comp.make()
    if prec.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net = net.to(device)
    x_train = torch.from_numpy(split.x_train).unsqueeze(1).to(device)  # (N, 1, 28, 28) uint8
    y_train = torch.from_numpy(split.y_train.astype(np.int64)).to(device)
    x_val = torch.from_numpy(split.x_val).unsqueeze(1).to(device)
    y_val = torch.from_numpy(split.y_val.astype(np.int64)).to(device)
    loss_fn = _squared_hinge if comp.loss == "squared_hinge" else F.cross_entropy

    def step_loss(idx, gen):
        with prec.autocast():
            logits = net(to_float(x_train[idx], prec.channels_last))
        y = y_train[idx]
        return loss_fn(logits.float(), y), (logits.argmax(1) == y).sum()

    def validate():
        net.eval()
        logits = map_batches(net, x_val, 1024, prec)
        return {"val_acc": (logits.argmax(1) == y_val).float().mean().item()}

    def log(row):
        echo(
            f"  {comp.name} epoch {row['epoch']}: loss {row['loss']:.4f}  val {row['val_acc'] * 100:.2f}%  "
            f"{row['seconds']:.1f}s"
        )

    start = time.perf_counter()
    spec = StageSpec(
        name=comp.name,
        model=net,
        params=list(net.parameters()),
        set_modes=net.train,
        step_loss=step_loss,
        validate=validate,
        score_key="val_acc",
        higher_is_better=True,
        n_train=len(x_train),
        epochs=epochs or comp.epochs,
        batch_size=comp.batch_size,
        lr=comp.lr,
        schedule=tcfg.schedule,
        weight_decay=tcfg.weight_decay,
        keep_best_epoch=tcfg.keep_best_epoch,
        data_device=x_train.device,
    )
    summary = fit(spec, seed=seed, log=log)
    train_seconds = time.perf_counter() - start
    net.eval()
    start = time.perf_counter()
    logits = map_batches(net, torch.from_numpy(split.x_test).unsqueeze(1).to(device), 1024, prec)
    y_pred = logits.argmax(1).cpu().numpy()
    predict_seconds = time.perf_counter() - start
    return {
        "y_pred": y_pred,
        "val_accuracy": summary["val_acc"],
        "chosen": {"best_epoch": summary["best_epoch"]},
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "parameters": sum(p.numel() for p in net.parameters()),
    }


def run_comparator(
    name: str,
    split: Split,
    *,
    seed: int = 0,
    device: str = "cpu",
    torch_epochs: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Train, select on validation, test once; the JSON-ready result."""
    comp = COMPARATORS[name]
    echo(f"{comp.name}: {comp.title}")
    if comp.kind == "sklearn":
        out = run_sklearn(comp, split, seed, echo)
    else:
        out = run_torch(comp, split, seed, echo, device=device, epochs=torch_epochs)
    y_pred = out.pop("y_pred")
    metrics = classification_metrics(split.y_test, y_pred, CLASS_NAMES)
    hyper = describe(comp)
    if torch_epochs:
        hyper["epochs"] = torch_epochs
    from deepautodnn.paper import TABLE_IV

    result = {
        "name": comp.name,
        "title": comp.title,
        "paper_row": comp.paper_row,
        "paper_accuracy": TABLE_IV.get(comp.paper_row),
        "accuracy": metrics["accuracy"],
        **{k: v for k, v in out.items()},
        "predict_ms_per_image": out["predict_seconds"] / len(split.y_test) * 1000,
        "hyperparameters": hyper,
        "n_train": len(split.y_train),
        "n_val": len(split.y_val),
        "n_test": len(split.y_test),
        "seed": seed,
        "metrics": metrics,
    }
    echo(
        f"{comp.name}: test accuracy {result['accuracy'] * 100:.2f}% (val {result['val_accuracy'] * 100:.2f}%), "
        f"train {result['train_seconds']:.1f}s, predict {result['predict_seconds']:.1f}s"
    )
    return result


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(COMPARATORS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in COMPARATORS]
    if unknown:
        raise ValueError(f"unknown comparator(s) {', '.join(unknown)}; choose from {', '.join(COMPARATORS)}")
    return names


def run_baselines(
    out_dir: str | Path,
    names: list[str] | None = None,
    *,
    data_dir=None,
    train_limit: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    torch_epochs: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run the named comparators (all by default), writing OUT/NAME.json after each one finishes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = load_split(data_dir, train_limit)
    machine = machine_info()
    results = {}
    for name in names or list(COMPARATORS):
        result = run_comparator(name, split, seed=seed, device=device, torch_epochs=torch_epochs, echo=echo)
        result["machine"] = machine
        result["train_limit"] = train_limit
        result |= provenance()
        atomic_write_json(out_dir / f"{name}.json", result)
        results[name] = result
    return results


def load_results(out_dir: str | Path) -> dict[str, dict]:
    """The comparator results saved in a folder, by name, in the registry's order."""
    out_dir = Path(out_dir)
    found = {p.stem: read_json(p) for p in sorted(out_dir.glob("*.json")) if p.stem in COMPARATORS}
    return {name: found[name] for name in COMPARATORS if name in found}
