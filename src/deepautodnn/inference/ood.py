"""Unknown-input detection: does this image look like a garment of the training data at all?

Several signals, each larger for stranger inputs, are fused into one `unknown_score` (above 1
means unknown):

- from the model's own outputs (every backend gives them, see `inference.graph.GraphOutputs`):
  `msp` (1 - the top softmax probability, the baseline of Hendrycks & Gimpel, 2017), `energy`
  (-logsumexp of the logits; Liu et al., 2020), `mahalanobis` (the distance of the penultimate
  features to the nearest class mean under one shared covariance; Lee et al., 2018), `knn` (the
  distance to the k-th nearest training image in L2-normalised feature space; Sun et al., 2022)
  and `reconstruction` (the per-image MSE of an autoencoder trained to convergence);
- from preprocessing (`data.preprocess.Preprocessed.evidence`), which sees the whole photo before it
  shrinks to 28x28: how much of the image is the object (too little, or all of it), how clean the
  backdrop is, how many separate objects there are, how much fine detail the photo has, and how
  much of the border the object covers. A Fashion-MNIST image is one object on an empty backdrop;
  a cat photo, a page of text or noise is not.

Each signal is put on a common scale by its own calibration distribution, s -> (s - median) /
(q99 - median), and the fused score is the largest of them. The threshold is the fused score's
(1 - false-alarm rate) quantile on the calibration images: the validation split as arrays and the
same images rendered as product photos (`training.calibrate`), the rate held on each. Backends differ
(bf16 and int8 move the features), so every backend keeps its own scales and threshold, fitted on
its own outputs; the class means, covariance and kNN bank come from the training split once.

pytorch-ood implements these detectors, but it imports torchvision at import time, which this
project does not depend on; the few lines each detector needs are written here instead.

Model directories made before this detector (`unknown.json` without "format": 2) keep their
two-signal detector, `TwoSignalDetector`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepautodnn.models.hybrid import ConvAutoencoder, reconstruction_error, to_unit
from deepautodnn.models.pretrained import resolve_model_dir
from deepautodnn.utils.files import atomic_write_json, read_json, read_verified, write_with_checksum

UNKNOWN_FILE = "unknown.json"
STATS_FILE = "unknown.safetensors"  # class means, shared precision matrix and the kNN bank
REFERENCE_AE_FILE = "unknown_autoencoder.safetensors"
DEFAULT_FALSE_ALARM_RATE = 0.05
FORMAT = 2

MODEL_SIGNALS = ("msp", "energy", "mahalanobis", "knn", "reconstruction")
INPUT_SIGNALS = (
    "foreground_low",
    "foreground_high",
    "background_residual",
    "object_count",
    "high_frequency",
    "object_touches_border",
)
SIGNALS = MODEL_SIGNALS + INPUT_SIGNALS
# What the unknown score fuses, chosen on validation images and development foreign sets
# (benchmarks/ood_recipe.py, results/recipe_trials.json): msp, energy and the reconstruction error
# add false alarms on photos more than they add detections, so they are reported but not fused.
FUSED_SIGNALS = ("mahalanobis", "knn") + INPUT_SIGNALS
# A count moves in whole steps: one more object than usual is one unit, however clean calibration was.
SCALE_FLOOR = {"object_count": 1.0}
KNN_K = 10  # Sun et al. use k=50 with 50,000 training images; the bank here holds 10,000


def _reconstruction_error(images_u8: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """The model's `reconstruction_error` on a backend's arrays: uint8 inputs (N, H, W) and their
    reconstructions (N, H, W) in [0, 1] -> (N,)."""
    return reconstruction_error(to_unit(torch.as_tensor(images_u8)), torch.as_tensor(recon)).numpy()


def evidence_of_arrays(images_u8: np.ndarray) -> list[dict]:
    """Preprocessing's input-level evidence for images already in the model's format (N, H, W)."""
    from PIL import Image

    from deepautodnn.data.preprocess import preprocess

    return [preprocess(Image.fromarray(a), a.shape[-1]).evidence for a in images_u8]


@dataclass
class FeatureStats:
    """What the feature-space detectors know of the training split (torch float32 features)."""

    class_means: np.ndarray  # (K, D)
    precision: np.ndarray  # (D, D), inverse of the shared (Ledoit-Wolf shrunk) covariance
    bank: np.ndarray  # (M, D), L2-normalised training features for kNN

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, *, bank_size: int = 10_000, seed: int = 0) -> FeatureStats:
        from sklearn.covariance import LedoitWolf

        classes = np.unique(labels)  # a class absent from the sample has no mean (and no NaN one)
        means = np.stack([features[labels == k].mean(0) for k in classes])  # (K present, D)
        centred = features - means[np.searchsorted(classes, labels)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        pick = np.random.default_rng(seed).permutation(len(features))[:bank_size]
        return cls(means.astype(np.float32), precision.astype(np.float32), _normalise(features[pick]))

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        """Squared distance to the nearest class mean: (N, D) -> (N,)."""
        f = torch.from_numpy(np.ascontiguousarray(features, np.float32))
        means, precision = torch.from_numpy(self.class_means), torch.from_numpy(self.precision)
        out = []
        for chunk in f.split(1024):  # bounded memory for wide features
            diff = chunk[:, None, :] - means[None]  # (B, K, D)
            out.append(((diff @ precision) * diff).sum(-1).min(1).values)  # (B,)
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def knn(self, features: np.ndarray, k: int = KNN_K) -> np.ndarray:
        """Euclidean distance to the k-th nearest bank feature, both L2-normalised: (N, D) -> (N,)."""
        sim = torch.from_numpy(_normalise(features)) @ torch.from_numpy(self.bank).T  # (N, M) cosine
        kth = sim.topk(min(k, sim.shape[1]), dim=1).values[:, -1]
        return torch.sqrt(torch.clamp(2 - 2 * kth, min=0)).numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        """As saved: the bank in float16 when `half_bank` rounded it (the shipped model's, half the size)."""
        bank = torch.from_numpy(self.bank)
        return {
            "class_means": torch.from_numpy(self.class_means),
            "precision": torch.from_numpy(self.precision),
            "bank": bank.half() if self.bank_is_half else bank,
        }

    @property
    def bank_is_half(self) -> bool:
        """Whether every bank value is exactly a float16 (see `half_bank`), so storing it so loses nothing."""
        return bool(np.array_equal(self.bank, self.bank.astype(np.float16).astype(np.float32)))

    def half_bank(self) -> None:
        """Round the kNN bank to float16 values (kept in float32 for the arithmetic): scores computed
        after this are exactly those of the bank as stored in float16."""
        self.bank = self.bank.astype(np.float16).astype(np.float32)


def _normalise(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, np.float32)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def model_signals(out, images_u8: np.ndarray, stats: FeatureStats) -> dict[str, np.ndarray]:
    """The five model-based signals from one backend's `GraphOutputs` (larger = stranger)."""
    if out.logits is None or out.features is None:
        raise ValueError(
            "this backend's graph gives no logits and features (an ONNX file exported by an older "
            "deepautodnn); export it again with `deepautodnn export MODEL_DIR`"
        )
    logits = out.logits.astype(np.float64)
    top = logits.max(1)
    return {
        "msp": 1.0 - out.proba.max(1),
        "energy": -(top + np.log(np.exp(logits - top[:, None]).sum(1))),  # -logsumexp, computed stably
        "mahalanobis": stats.mahalanobis(out.features),
        "knn": stats.knn(out.features),
        # Reported, not fused (FUSED_SIGNALS): a graph run without its reconstruction leaves it out.
        **({} if out.recon is None else {"reconstruction": _reconstruction_error(images_u8, out.recon)}),
    }


def input_signals(evidence: list[dict]) -> dict[str, np.ndarray]:
    """The input-level signals from preprocessing's evidence, one dict per image."""

    def column(key: str) -> np.ndarray:
        return np.array([float(e[key]) for e in evidence], np.float64)

    fg = column("foreground_fraction")
    return {
        "foreground_low": -fg,  # nothing found: a flat colour, a gradient
        "foreground_high": fg,  # the "object" fills the frame: noise, a landscape
        "background_residual": column("background_residual"),
        "object_count": column("object_count"),
        "high_frequency": column("high_frequency"),
        "object_touches_border": column("object_touches_border"),
    }


@dataclass
class BackendCalibration:
    """One backend's scales and threshold, fitted on its own outputs for the calibration images."""

    median: dict[str, float]
    scale: dict[str, float]  # q99 - median, at least a small positive number
    threshold: float  # on the fused score
    validation_false_alarm_rate: dict[str, float]  # per calibration subset (arrays, photos)
    n_calibration: int
    alone: dict[str, float] = field(default_factory=dict)  # each signal's own threshold at the same rate

    @classmethod
    def fit(cls, signals: dict[str, np.ndarray], subsets: dict[str, np.ndarray], fused_names, false_alarm_rate: float):
        median = {k: float(np.median(v)) for k, v in signals.items()}
        scale = {
            k: max(float(np.quantile(v, 0.99)) - median[k], SCALE_FLOOR.get(k, 1e-6 * max(1.0, abs(median[k]))))
            for k, v in signals.items()
        }
        cal = cls(median, scale, 0.0, {}, len(next(iter(signals.values()))))

        def threshold(score: np.ndarray) -> float:  # the rate holds on each subset: the largest quantile
            return max(float(np.quantile(score[m], 1 - false_alarm_rate, method="higher")) for m in subsets.values())

        fused = cal.fuse(signals, fused_names)
        cal.threshold = threshold(fused)
        cal.alone = {k: threshold(v) for k, v in signals.items()}  # for comparing each signal on its own
        cal.validation_false_alarm_rate = {
            name: float((fused[m] > cal.threshold).mean()) for name, m in subsets.items()
        }
        return cal

    def normalised(self, signals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: (v - self.median[k]) / self.scale[k] for k, v in signals.items() if k in self.median}

    def fuse(self, signals: dict[str, np.ndarray], names) -> np.ndarray:
        z = self.normalised(signals)
        return np.max(np.stack([z[k] for k in names]), axis=0)


@dataclass
class UnknownDetector:
    """The fused detector of a model directory (`unknown.json` + `unknown.safetensors`)."""

    false_alarm_rate: float
    fused_signals: tuple[str, ...]
    backends: dict[str, BackendCalibration]
    stats: FeatureStats = field(repr=False)
    reference_autoencoder_epochs: int = 0
    autoencoder: torch.nn.Module | None = field(default=None, repr=False, compare=False)  # not saved here

    @property
    def needs_reconstruction(self) -> bool:
        """Whether scoring reads the reconstruction (only if a saved detector fuses it)."""
        return "reconstruction" in self.fused_signals

    def calibration_for(self, backend: str) -> tuple[str, BackendCalibration]:
        """The backend's own calibration; torch float32's for a backend never calibrated."""
        if backend in self.backends:
            return backend, self.backends[backend]
        return "torch", self.backends["torch"]

    def signals(self, out, images_u8: np.ndarray, evidence: list[dict] | None = None) -> dict[str, np.ndarray]:
        """Every signal, raw; evidence is computed from the arrays when not given."""
        evidence = evidence_of_arrays(images_u8) if evidence is None else evidence
        return {**model_signals(out, images_u8, self.stats), **input_signals(evidence)}

    def fused(self, out, images_u8: np.ndarray, evidence: list[dict] | None, backend: str) -> np.ndarray:
        """The fused score before dividing by the threshold (for ROC curves)."""
        return self.calibration_for(backend)[1].fuse(self.signals(out, images_u8, evidence), self.fused_signals)

    def scores(
        self, out, images_u8: np.ndarray, evidence: list[dict] | None = None, backend: str = "torch"
    ) -> np.ndarray:
        """unknown_score per image: the fused score over the backend's threshold, > 1 means unknown."""
        cal = self.calibration_for(backend)[1]
        fused = cal.fuse(self.signals(out, images_u8, evidence), self.fused_signals)
        return np.maximum(fused, 0.0) / max(cal.threshold, 1e-12)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "false_alarm_rate": self.false_alarm_rate,
            "fused_signals": list(self.fused_signals),
            "knn_k": KNN_K,
            "reference_autoencoder_epochs": self.reference_autoencoder_epochs,
            "backends": {name: asdict(cal) for name, cal in self.backends.items()},
        }

    def save(self, model_dir: str | Path) -> None:
        from safetensors.torch import save

        write_with_checksum(Path(model_dir) / STATS_FILE, save(self.stats.tensors()))
        atomic_write_json(Path(model_dir) / UNKNOWN_FILE, self.to_dict())  # last: it names a whole detector

    @classmethod
    def from_files(cls, model_dir: str | Path, data: dict) -> UnknownDetector:
        from deepautodnn.errors import ModelFileError
        from deepautodnn.models.serialization import parse_safetensors

        path = Path(model_dir) / UNKNOWN_FILE
        stats_path = Path(model_dir) / STATS_FILE
        try:
            tensors = parse_safetensors(read_verified(stats_path), stats_path)
            stats = FeatureStats(*(tensors[k].float().numpy() for k in ("class_means", "precision", "bank")))
            backends = {name: BackendCalibration(**cal) for name, cal in data["backends"].items()}
            det = cls(
                float(data["false_alarm_rate"]),
                tuple(data["fused_signals"]),
                backends,
                stats,
                int(data.get("reference_autoencoder_epochs", 0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(f"{path}: not a usable unknown-detector file ({type(err).__name__}: {err})") from None
        if "torch" not in backends or not set(det.fused_signals) <= set(SIGNALS):
            raise ModelFileError(f"{path}: needs a torch calibration and known signal names")
        return det

    @classmethod
    def load(cls, model_dir: str | Path) -> UnknownDetector | TwoSignalDetector | None:
        """The model directory's (or pretrained name's) detector, its reference autoencoder attached;
        None if it has none."""
        model_dir = resolve_model_dir(model_dir)
        path = model_dir / UNKNOWN_FILE
        if not path.exists():
            return None
        data = read_json(path)
        det = (
            cls.from_files(model_dir, data) if data.get("format") == FORMAT else TwoSignalDetector.from_dict(path, data)
        )
        det.autoencoder = load_reference_autoencoder(model_dir)
        return det


@dataclass
class TwoSignalDetector:
    """The detector of model directories made before deepautodnn 0.2: the reconstruction error and
    1 - the top probability, each with half the false-alarm budget. Kept so they still load."""

    recon_threshold: float
    uncertainty_threshold: float
    false_alarm_rate: float
    validation_false_alarm_rate: float
    n_calibration: int
    autoencoder: torch.nn.Module | None = field(default=None, repr=False, compare=False)
    needs_reconstruction = True  # half of its score is the reconstruction error

    @classmethod
    def from_dict(cls, path: Path, data: dict) -> TwoSignalDetector:
        from deepautodnn.errors import ModelFileError

        try:
            return cls(**data)
        except TypeError as err:
            raise ModelFileError(f"{path}: not an unknown-detector file ({err})") from None

    def calibration_for(self, backend: str) -> tuple[str, None]:
        return "torch", None

    def scores(self, out, images_u8: np.ndarray, evidence=None, backend: str = "torch") -> np.ndarray:
        recon = _reconstruction_error(images_u8, out.recon)
        return np.maximum(
            recon / max(self.recon_threshold, 1e-12), (1 - out.proba.max(1)) / max(self.uncertainty_threshold, 1e-12)
        )

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "autoencoder"}


def load_reference_autoencoder(model_dir: str | Path):
    """The reference autoencoder saved beside the model, or None (the model's own is used)."""
    from deepautodnn.models.serialization import checksums_required, load_config_record, load_weights

    path = Path(model_dir) / REFERENCE_AE_FILE
    if not path.exists():
        return None
    cfg, record = load_config_record(model_dir)
    autoencoder = ConvAutoencoder(cfg.model)
    load_weights(path, autoencoder, require_checksum=checksums_required(record))
    return autoencoder.eval()
