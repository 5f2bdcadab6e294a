"""deepautodnn: the DeepAutoDNN apparel classifier (convolutional autoencoder + deep neural network).

Public API::

    from deepautodnn import load_model, train_run, get_preset, load_fashion_mnist
    from deepautodnn import run_baselines, run_ablation, write_paper_report
"""

__version__ = "0.1.0"

from .ablate import run_ablation  # noqa: E402
from .baselines import run_baselines  # noqa: E402
from .checkpoint import load_model, save_model  # noqa: E402
from .config import Config, ModelConfig, TrainConfig, get_preset  # noqa: E402
from .data import CLASS_NAMES, load_fashion_mnist  # noqa: E402
from .estimator import DeepAutoDNNClassifier  # noqa: E402
from .evaluate import classification_metrics, evaluate_model, predict_proba  # noqa: E402
from .models import ConvAutoencoder, DeepAutoDNN, DeepClassifier  # noqa: E402
from .predict import predict_files  # noqa: E402
from .preprocess import ImageError, load_image  # noqa: E402
from .report import write_paper_report  # noqa: E402
from .runner import train_run  # noqa: E402
from .unknown import UnknownDetector  # noqa: E402

__all__ = [
    "CLASS_NAMES", "Config", "DeepAutoDNNClassifier", "ImageError", "UnknownDetector", "load_image", "ConvAutoencoder", "DeepAutoDNN", "DeepClassifier", "ModelConfig",
    "TrainConfig", "classification_metrics", "evaluate_model", "get_preset", "load_fashion_mnist",
    "load_model", "predict_files", "predict_proba", "run_ablation", "run_baselines", "save_model", "train_run",
    "write_paper_report",
]
