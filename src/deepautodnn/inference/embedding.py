"""Search vectors for images, behind `deepautodnn embed MODEL SOURCE... --out vectors.parquet`.

A vector is the model's own view of a photo, L2-normalised so that an inner product is a cosine
similarity: the classifier's penultimate features, or the autoencoder's code
(`models.hybrid.embedding_from`). They are always computed by eager PyTorch in float32, whatever
backend `predict` would pick, so the vectors of a catalogue and of a later query agree on any
machine. Each row also carries the model's label and unknown flag, which `similar --same-class` and
the service read.

`EmbeddingIdentity` says which model and space made the vectors; the vectors file and the index
record it, and a query by any other model is refused (`vector_index`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepautodnn.inference.catalogue import CatalogueSummary, check_workers, classify_batch, run_catalogue
from deepautodnn.inference.catalogue_output import open_output
from deepautodnn.inference.names import DEFAULT_SPACE
from deepautodnn.models.hybrid import check_space


@dataclass(frozen=True)
class EmbeddingIdentity:
    """What makes two sets of vectors comparable: the same weights, space, width and input size."""

    weights_sha256: str
    space: str
    dim: int
    image_size: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EmbeddingIdentity:
        return cls(**{k: data[k] for k in ("weights_sha256", "space", "dim", "image_size")})

    def differs_from(self, other: EmbeddingIdentity) -> str | None:
        """Why vectors of `other` can't be searched with queries of this one, or None."""
        if self.weights_sha256 != other.weights_sha256:
            return f"different weights (SHA-256 {self.weights_sha256[:12]} here, {other.weights_sha256[:12]} there)"
        for key in ("space", "dim", "image_size"):
            if getattr(self, key) != getattr(other, key):
                return f"a different {key} ({getattr(self, key)} here, {getattr(other, key)} there)"
        return None


def weights_digest(model_dir: Path) -> str:
    """The SHA-256 of a model directory's weights (recorded beside them since format 2)."""
    from deepautodnn.models.serialization import WEIGHTS_FILE
    from deepautodnn.utils.files import read_verified, recorded_checksum, sha256_hex

    path = model_dir / WEIGHTS_FILE
    return recorded_checksum(path) or sha256_hex(read_verified(path, required=False))


class Embedder:
    """A model loaded to embed images: its float32 graph, unknown detector and class names."""

    def __init__(self, model: str | os.PathLike, space: str = DEFAULT_SPACE):
        from deepautodnn.inference.backends import TorchBackend
        from deepautodnn.inference.graph import load_graph
        from deepautodnn.inference.ood import UnknownDetector
        from deepautodnn.models.pretrained import resolve_model_dir

        model_dir = resolve_model_dir(model)
        graph = load_graph(model_dir)
        self.space = check_space(space)
        self.backend = TorchBackend(graph)  # float32 eager: the same vectors on every machine
        self.detector = UnknownDetector.load(model_dir)
        cfg = graph.model.config
        self.class_names = list(cfg.class_names)
        self.size = cfg.image_size
        self.identity = EmbeddingIdentity(weights_digest(model_dir), space, graph.model.embedding_dim(space), self.size)

    def rows(self, prepared: list[tuple], top_k: int = 3) -> list[dict]:
        """Catalogue rows with a `vector` each for prepare_chunk tuples (errors keep their row)."""
        return classify_batch(self.backend, self.detector, self.class_names, prepared, top_k, embedding=self.space)

    def embed(self, images_u8: np.ndarray, evidence: list[dict] | None = None):
        """Model inputs (N, size, size) uint8 -> (GraphOutputs with `embedding` (N, D), unknown
        scores (N,) or None without a detector)."""
        from deepautodnn.inference.predict import run_with_detection

        return run_with_detection(self.backend, self.detector, images_u8, evidence, embedding=self.space)


def embed_catalogue(
    model: str | os.PathLike,
    sources: Iterable[str],
    out: str | os.PathLike,
    *,
    space: str = DEFAULT_SPACE,
    batch_size: int = 256,
    workers: int | None = None,
    progress: bool = True,
) -> CatalogueSummary:
    """A vector for every image the `sources` name, into the Parquet file `out`, skipping the
    files it already holds (so a rerun resumes); `workers` decoding processes as for
    `classify_catalogue`. An `out` made by another model or space is refused."""
    if batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    workers = check_workers(workers)
    embedder = Embedder(model, space)
    output = open_output(out, identity=embedder.identity.to_dict())
    return run_catalogue(embedder.rows, embedder.size, sources, output, workers, batch_size, progress, "embedded")
