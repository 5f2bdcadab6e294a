"""Similar items: a photo in, the nearest catalogue items out (`deepautodnn similar`, the service's
`POST /v1/similar`).

The query goes through the same preprocessing and float32 graph as the catalogue did (`Embedder`,
with the index's space), so it lands in the same vector space; the index refuses a model whose
vectors would not. A query the unknown-input detector flags (a cat photo, a page of text) gets no
neighbours, only the flag: the nearest garments to a cat would look like confident answers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepautodnn.data.preprocess import ImageError, load_preprocessed
from deepautodnn.inference.embedding import Embedder
from deepautodnn.inference.predict import expand_inputs, prediction_record
from deepautodnn.inference.vector_index import CatalogueIndex

UNKNOWN_NOTE = "this does not look like a garment, so no similar items are shown"


class SimilarFinder:
    """A catalogue index with the model that made its vectors."""

    def __init__(self, model: str | os.PathLike, index_path: str | os.PathLike):
        self.index = CatalogueIndex.load(index_path)
        self.embedder = Embedder(model, self.index.identity.space)
        self.index.check_model(self.embedder.identity, index_path)
        self.index_path = str(index_path)

    @property
    def class_names(self) -> list[str]:
        return self.embedder.class_names

    @property
    def size(self) -> int:
        return self.embedder.size

    def info(self) -> dict:
        """What /v1/model and `index info` report about the index."""
        meta = self.index.meta
        return {
            "items": meta["count"],
            "kind": meta["kind"],
            "space": meta["identity"]["space"],
            "dim": meta["identity"]["dim"],
            "params": meta["params"],
        }

    def similar(
        self,
        images_u8: np.ndarray,
        names: list[str],
        *,
        k: int = 10,
        same_class: bool = False,
        even_if_unknown: bool = False,
        evidence: list[dict] | None = None,
    ) -> list[dict]:
        """For each model input (N, size, size) uint8: {"query": its prediction record,
        "neighbours": [{"file", "score", "label", "label_index", "unknown", "id"}] best first,
        "note": why there are none, or None}."""
        if k < 1:
            raise ValueError("--k must be >= 1")
        out, scores = self.embedder.embed(images_u8, evidence)
        queries = [
            prediction_record(name, p, self.class_names, 3, None if scores is None else scores[i])
            for i, (name, p) in enumerate(zip(names, out.proba))
        ]
        searched = [i for i, q in enumerate(queries) if even_if_unknown or not q["unknown"]]
        found = self.index.search(
            out.embedding[searched], k, [queries[i]["label_index"] for i in searched] if same_class else None
        )
        neighbours = dict(zip(searched, found))
        results = []
        for i, query in enumerate(queries):
            items = [{**item, "label": self.class_names[item["label_index"]]} for item in neighbours.get(i, [])]
            results.append({"query": query, "neighbours": items, "note": None if i in neighbours else UNKNOWN_NOTE})
        return results

    def similar_files(self, paths, **kwargs) -> tuple[list[dict], list[dict]]:
        """`similar` for image files and folders: (results, errors as {"file", "error"})."""
        images, evidence, names, errors = [], [], [], []
        for path in expand_inputs(paths):
            try:
                prepared = load_preprocessed(Path(path), self.size)
            except ImageError as err:
                errors.append({"file": str(path), "error": str(err)})
                continue
            images.append(prepared.image)
            evidence.append(prepared.evidence)
            names.append(str(path))
        if not images:
            return [], errors
        return self.similar(np.stack(images), names, evidence=evidence, **kwargs), errors
