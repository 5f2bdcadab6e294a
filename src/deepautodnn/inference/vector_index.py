"""The catalogue's search index, behind `deepautodnn index build` and `similar`: FAISS over the
vectors that `embed` wrote.

Below `EXACT_BELOW` vectors the index is exact (`IndexFlatIP`: every vector scored); above it, an
inverted file (`IndexIVFFlat`, about sqrt(N) lists) scores only the `nprobe` lists nearest a query.
`nprobe` is chosen when the index is built, by measurement: the smallest that finds at least
`target_recall` of the exact top 10 for sample queries. The whole curve (nprobe, recall@10,
milliseconds per query) is recorded with the choice, in the index and beside it (`OUT.json`).

One file holds the index, the catalogue's file names, labels and unknown flags, the identity of
the model that made the vectors (`embedding.EmbeddingIdentity`), and a SHA-256 over all of it. A
changed or truncated file is refused, and so is a query by a model whose vectors differ.
FAISS is an optional extra: `pip install 'deepautodnn[search]'`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepautodnn.errors import DeepAutoDNNError
from deepautodnn.inference.embedding import EmbeddingIdentity
from deepautodnn.inference.names import EXACT_BELOW, INDEX_KINDS, TARGET_RECALL
from deepautodnn.utils.extras import require_extra
from deepautodnn.utils.files import atomic_write_bytes, atomic_write_json, sha256_hex
from deepautodnn.version import __version__

FORMAT = 1
META_KEY = "deepautodnn_index"
TUNE_QUERIES = 500  # sample queries that measure recall while nprobe is chosen
TIME_QUERIES = 100  # of those, timed one by one: a shop's query comes alone


class IndexFileError(DeepAutoDNNError, ValueError):
    """An index or vectors file can't be used: damaged, not one, or made by another model. Names the file."""


def faiss_module():
    require_extra("search", "similar-item search")
    import faiss

    return faiss


def _flat(vectors: np.ndarray):
    faiss = faiss_module()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def exact_neighbours(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (Q, k): the exact top k by inner product."""
    return _flat(database).search(queries, k)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true ids (Q, k) that `found` (Q, k) holds."""
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found.tolist(), truth.tolist())]))


def _ms_per_query(index, queries: np.ndarray, k: int) -> float:
    start = time.perf_counter()
    for q in queries:
        index.search(q[None], k)
    return (time.perf_counter() - start) * 1e3 / max(1, len(queries))


@dataclass
class IndexChoice:
    kind: str  # "exact" or "ivf"
    params: dict = field(default_factory=dict)  # nlist, nprobe for ivf
    tradeoff: list[dict] = field(default_factory=list)  # measured: nprobe, recall_at_10, ms_per_query
    tuned_on: str = ""


def build_faiss_index(
    vectors: np.ndarray,
    *,
    kind: str = "auto",
    target_recall: float = TARGET_RECALL,
    queries: np.ndarray | None = None,
    seed: int = 0,
):
    """(FAISS index, IndexChoice) over L2-normalised float32 `vectors` (N, D). For an IVF index,
    nprobe is tuned on `queries` (Q, D) if given, else on a sample of the vectors themselves, each
    query's own vector left out of both its results and the truth."""
    faiss = faiss_module()
    if kind not in INDEX_KINDS:
        raise ValueError(f"--kind must be one of {', '.join(INDEX_KINDS)}")
    if not 0 < target_recall <= 1:
        raise ValueError("--recall must be in (0, 1]")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if kind == "auto":
        kind = "exact" if n < EXACT_BELOW else "ivf"
    if kind == "exact" or n < 2:
        return _flat(vectors), IndexChoice("exact")
    nlist = max(1, min(int(round(np.sqrt(n))), n // 39))  # FAISS wants >= 39 training points per list
    rng = np.random.default_rng(seed)
    train = vectors[rng.choice(n, min(n, 64 * nlist), replace=False)]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(train)
    index.add(vectors)
    choice = IndexChoice("ivf", {"nlist": nlist})
    choice.params["nprobe"], choice.tradeoff, choice.tuned_on = _tune_nprobe(
        index, vectors, queries, target_recall, rng
    )
    index.nprobe = choice.params["nprobe"]
    return index, choice


def _tune_nprobe(index, vectors: np.ndarray, queries, target_recall: float, rng) -> tuple[int, list[dict], str]:
    k = 10
    if queries is not None:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        truth = exact_neighbours(vectors, queries, k)[1]
        own, tuned_on = None, f"{len(queries)} given queries"
    else:
        own = rng.choice(len(vectors), min(len(vectors), TUNE_QUERIES), replace=False)
        queries = vectors[own]
        truth = _without_own(exact_neighbours(vectors, queries, k + 1)[1], own, k)
        tuned_on = f"{len(own)} catalogue vectors as queries, each without itself"
    curve, chosen = [], None
    nprobe = 1
    while True:
        index.nprobe = nprobe
        found = index.search(queries, k if own is None else k + 1)[1]
        found = found if own is None else _without_own(found, own, k)
        point = {
            "nprobe": nprobe,
            "recall_at_10": round(recall_at(found, truth), 4),
            "ms_per_query": round(_ms_per_query(index, queries[:TIME_QUERIES], k), 4),
        }
        curve.append(point)
        if chosen is None and point["recall_at_10"] >= target_recall:
            chosen = nprobe
        if nprobe >= index.nlist or (chosen is not None and nprobe >= 2 * chosen):
            break  # one step past the choice shows what more recall would cost
        nprobe = min(2 * nprobe, index.nlist)
    return chosen or index.nlist, curve, tuned_on


def _without_own(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's ids (Q, k+1) without the query's own id, cut to k."""
    return np.array([[i for i in row if i != o][:k] for row, o in zip(ids.tolist(), own.tolist())])


@dataclass
class CatalogueIndex:
    """A built index with what its ids stand for: file, label and unknown flag per catalogue item."""

    index: object  # a faiss.Index
    files: list[str]
    label_index: np.ndarray  # (N,) int32, the model's class per item
    unknown: np.ndarray  # (N,) bool, the item itself looked unlike the training data
    meta: dict  # identity, kind, params, tradeoff, class_names, count, source
    _selectors: dict = field(default_factory=dict, repr=False)  # class -> (ids, faiss selector)

    @property
    def identity(self) -> EmbeddingIdentity:
        return EmbeddingIdentity.from_dict(self.meta["identity"])

    def check_model(self, identity: EmbeddingIdentity, path: str | os.PathLike = "the index") -> None:
        """Refuse queries whose vectors are not comparable with the catalogue's."""
        why = identity.differs_from(self.identity)
        if why is not None:
            raise IndexFileError(
                f"{path}: was built from vectors of another model: {why}; "
                "embed the catalogue again with this model and rebuild the index"
            )

    def search(self, queries: np.ndarray, k: int, classes: list[int | None] | None = None) -> list[list[dict]]:
        """The k nearest items to each query (Q, D): [{"id", "file", "score", "label_index",
        "unknown"}] best first; `classes[i]`, when given, keeps query i to items of that class."""
        if k < 1:
            raise ValueError("--k must be >= 1")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.files))
        results = []
        for i, q in enumerate(queries):
            scores, ids = self._search_one(q, k, None if classes is None else classes[i])
            results.append(
                [
                    {
                        "id": int(j),
                        "file": self.files[j],
                        "score": float(s),
                        "label_index": int(self.label_index[j]),
                        "unknown": bool(self.unknown[j]),
                    }
                    for s, j in zip(scores[0], ids[0])
                    if j >= 0  # fewer than k items matched the class filter
                ]
            )
        return results

    def _search_one(self, query: np.ndarray, k: int, cls: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (1, k), -1 for a missing id. With a class, an IVF index searches
        more lists in proportion (a class of a tenth of the items: ten times nprobe), so that as
        many candidates are scored as without the filter, and more again until it has k."""
        faiss = faiss_module()
        nprobe = self.meta["params"].get("nprobe")
        if cls is None:
            params = None if nprobe is None else faiss.SearchParametersIVF(nprobe=nprobe)
            return self.index.search(query[None], k, params=params)
        ids, selector = self._selector(cls)
        k = min(k, len(ids))
        if k == 0:
            return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64)
        if nprobe is None:
            return self.index.search(query[None], k, params=faiss.SearchParameters(sel=selector))
        nprobe = min(self.index.nlist, int(np.ceil(nprobe * len(self.files) / len(ids))))
        while True:
            found = self.index.search(query[None], k, params=faiss.SearchParametersIVF(sel=selector, nprobe=nprobe))
            if (found[1] >= 0).all() or nprobe >= self.index.nlist:
                return found
            nprobe = min(2 * nprobe, self.index.nlist)

    def _selector(self, cls: int):
        """The ids of class `cls` and a FAISS selector of them, made once per class."""
        if cls not in self._selectors:
            ids = np.flatnonzero(self.label_index == cls).astype(np.int64)
            self._selectors[cls] = (ids, faiss_module().IDSelectorBatch(ids))
        return self._selectors[cls]

    # ---- the file ------------------------------------------------------------------------------

    def _tensors(self) -> dict[str, np.ndarray]:
        faiss = faiss_module()
        encoded = [f.encode("utf-8") for f in self.files]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        offsets[1:] = np.cumsum([len(e) for e in encoded])
        return {
            "faiss_index": faiss.serialize_index(self.index),
            "files_utf8": np.frombuffer(b"".join(encoded), np.uint8) if encoded else np.zeros(0, np.uint8),
            "file_offsets": offsets,
            "label_index": self.label_index.astype(np.int32),
            "unknown": self.unknown.astype(np.uint8),
        }

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save

        tensors = self._tensors()
        meta = json.dumps(self.meta, sort_keys=True)
        digest = _payload_digest(meta, tensors)
        atomic_write_bytes(path, save(tensors, metadata={META_KEY: meta, "sha256": digest}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CatalogueIndex:
        from safetensors import SafetensorError
        from safetensors.numpy import load

        faiss = faiss_module()
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IndexFileError(f"{path}: no such index (build one with `deepautodnn index build`)") from None
        except IsADirectoryError:
            raise IndexFileError(f"{path}: is a folder, not an index file") from None
        try:
            tensors = load(data)
            header = _safetensors_metadata(data)  # load() does not return it
            meta_json, digest = header[META_KEY], header["sha256"]
        except (SafetensorError, KeyError, ValueError, TypeError) as err:
            raise IndexFileError(f"{path}: not a deepautodnn index ({err})") from None
        if _payload_digest(meta_json, tensors) != digest:
            raise IndexFileError(
                f"{path}: SHA-256 does not match the one it records; the file was changed or damaged after "
                "it was built. Build it again with `deepautodnn index build`"
            )
        meta = json.loads(meta_json)
        if meta.get("format") != FORMAT:
            raise IndexFileError(f"{path}: index format {meta.get('format')}; this version reads {FORMAT}")
        blob, offsets = tensors["files_utf8"].tobytes(), tensors["file_offsets"]
        files = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
        index = faiss.deserialize_index(tensors["faiss_index"])
        return cls(index, files, tensors["label_index"], tensors["unknown"].astype(bool), meta)


def _safetensors_metadata(data: bytes) -> dict:
    """The `__metadata__` of a safetensors file's header: an 8-byte little-endian length, then JSON."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length])["__metadata__"]


def _payload_digest(meta_json: str, tensors: dict[str, np.ndarray]) -> str:
    parts = [meta_json.encode("utf-8")] + [np.ascontiguousarray(tensors[k]).tobytes() for k in sorted(tensors)]
    return sha256_hex(b"".join(parts))


@dataclass
class Vectors:
    """The usable rows of an `embed` output (rows that hold an error are left out)."""

    vectors: np.ndarray  # (N, D) float32, L2-normalised
    files: list[str]
    label_index: np.ndarray  # (N,) int32
    unknown: np.ndarray  # (N,) bool
    identity: dict
    class_names: dict[int, str]  # the labels the rows name, by index


def read_vectors(path: str | os.PathLike) -> Vectors:
    """The vectors file of `embed`, checked: it records its model's identity and D-wide vectors."""
    from deepautodnn.inference.catalogue_output import read_identity

    require_extra("search", "reading vectors")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        identity = read_identity(path)
        if identity is None:
            raise IndexFileError(f"{path}: records no model identity; it was not written by `deepautodnn embed`")
        table = pq.read_table(path, columns=["file", "label", "label_index", "unknown", "vector", "error"])
    except FileNotFoundError:
        raise IndexFileError(f"{path}: no such vectors file (make one with `deepautodnn embed`)") from None
    except IndexFileError:
        raise
    except Exception as err:  # pyarrow's errors for a file that is not Parquet, or lacks a column
        reason = str(err).splitlines()[0][:200]
        raise IndexFileError(f"{path}: not a vectors file of `deepautodnn embed` ({reason})") from None
    table = table.filter(pc.is_null(table["error"]))
    n, dim = table.num_rows, identity["dim"]
    vectors = np.asarray(pc.list_flatten(table["vector"]).to_numpy(zero_copy_only=False), np.float32)
    if vectors.size != n * dim:
        raise IndexFileError(f"{path}: vectors are not all {dim} wide; the file was changed after `embed`")
    labels = np.asarray(table["label_index"].to_numpy(zero_copy_only=False), np.int32)
    names = {int(i): str(name) for i, name in _first_of_each(labels, table["label"].to_pylist())}
    return Vectors(
        vectors.reshape(n, dim),
        table["file"].to_pylist(),
        labels,
        np.asarray(table["unknown"].fill_null(False).to_numpy(zero_copy_only=False), bool),
        identity,
        names,
    )


def _first_of_each(indices: np.ndarray, names: list[str]):
    _, first = np.unique(indices, return_index=True)
    return ((indices[i], names[i]) for i in first)


def build_catalogue_index(
    vectors_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    kind: str = "auto",
    target_recall: float = TARGET_RECALL,
) -> CatalogueIndex:
    """An index over the vectors file of `embed`, saved to `out`; returns it."""
    if Path(out).resolve() == Path(vectors_path).resolve():
        raise IndexFileError(f"{out}: is the vectors file itself; write the index to another file")
    rows = read_vectors(vectors_path)
    if not rows.files:
        raise IndexFileError(f"{vectors_path}: holds no usable vectors (every row is an error, or none)")
    start = time.perf_counter()
    index, choice = build_faiss_index(rows.vectors, kind=kind, target_recall=target_recall)
    meta = {
        "format": FORMAT,
        "identity": rows.identity,
        "kind": choice.kind,
        "params": choice.params,
        "target_recall": target_recall if choice.kind == "ivf" else 1.0,
        "tradeoff": choice.tradeoff,
        "tuned_on": choice.tuned_on,
        "count": len(rows.files),
        "class_names": {str(i): name for i, name in sorted(rows.class_names.items())},
        "source": str(vectors_path),
        "build_seconds": round(time.perf_counter() - start, 3),
        "deepautodnn_version": __version__,
    }
    built = CatalogueIndex(index, rows.files, rows.label_index, rows.unknown, meta)
    built.save(out)
    atomic_write_json(f"{out}.json", meta)  # for people and tools: the file itself holds the checked copy
    return built
