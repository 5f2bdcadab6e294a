"""The catalogue on a Ray cluster, with Ray Data: `DeepAutoDNNPredictor` for `map_batches`, and
`classify_catalogue_ray`, behind `deepautodnn predict ... --out FILE --engine ray`.

The recipe, in Python (the files must be readable from every node: a shared disk, or object
storage that pyarrow reads, such as s3://)::

    import ray
    from deepautodnn.inference.ray_engine import DeepAutoDNNPredictor

    ds = ray.data.read_binary_files("s3://shop/photos/", include_paths=True)
    ds = ds.map_batches(DeepAutoDNNPredictor, fn_constructor_kwargs={"model": "fashion-mnist"},
                        concurrency=(1, 8), num_cpus=1, batch_size=256)
    ds.write_parquet("s3://shop/labels/")

Each actor loads the model once, and runs the same preprocessing (`load_preprocessed`), backend
(`make_backend`) and unknown-input detector as the local engine and the CLI, so the rows are the
same. Ray is an optional extra: `pip install 'deepautodnn[ray]'`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from deepautodnn.errors import DeepAutoDNNError
from deepautodnn.inference.catalogue import (
    CatalogueSummary,
    classify_batch,
    load_runner,
    prepare_one,
    progress_bar,
    skip_done,
    write_rows,
)
from deepautodnn.inference.catalogue_output import error_row, open_output, parquet_schema
from deepautodnn.inference.catalogue_sources import catalogue_paths
from deepautodnn.utils.extras import require_extra


class RayEngineError(DeepAutoDNNError):
    """The catalogue's Ray job failed; the rows written so far are kept."""


class DeepAutoDNNPredictor:
    """A Ray Data callable class: a batch with `bytes` and `path` columns (`read_binary_files(...,
    include_paths=True)`) in, a pyarrow Table of catalogue rows (`catalogue_output.COLUMNS`) out."""

    def __init__(self, model: str = "fashion-mnist", backend: str = "auto", top_k: int = 3, threads: int = 1):
        import torch

        torch.set_num_threads(threads)  # one actor per CPU Ray gives it
        self.runner, self.detector, self.class_names, self.size = load_runner(model, backend)
        self.top_k = top_k

    def __call__(self, batch: dict):
        import pyarrow as pa

        prepared = [prepare_one(bytes(data), self.size, str(path)) for data, path in zip(batch["bytes"], batch["path"])]
        rows = classify_batch(self.runner, self.detector, self.class_names, prepared, self.top_k)
        return pa.Table.from_pylist(rows, schema=parquet_schema())


def _readable(path: str) -> str | None:
    """Why the driver can't hand `path` to Ray (which would fail the whole job), or None."""
    if not os.path.exists(path):
        return f"{path}: file not found"
    if not os.path.isfile(path):
        return f"{path}: is a directory" if os.path.isdir(path) else f"{path}: not a regular file"
    if not os.access(path, os.R_OK):
        return f"{path}: permission denied"
    return None


def start_ray(cpus: int | None) -> None:
    """Connect to the cluster at $RAY_ADDRESS, or start a local Ray with `cpus` CPUs."""
    require_extra("ray", "--engine ray")
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the cluster at RAY_ADDRESS={address}" if address else "a local Ray"
        raise RayEngineError(f"could not start or reach {where}: {err}") from None


def classify_catalogue_ray(
    model,
    sources: Iterable[str],
    out: str | os.PathLike,
    *,
    top_k: int = 3,
    batch_size: int = 256,
    cpus: int | None = None,
    backend: str = "auto",
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> CatalogueSummary:
    """`classify_catalogue`'s job on Ray Data: the same rows into the same kinds of file, resumable
    the same way. `cpus` sizes a local Ray (default: every core); on a cluster Ray decides."""
    if top_k < 1 or batch_size < 1:
        raise ValueError("--top-k and --batch-size must be >= 1")
    from deepautodnn.models.pretrained import resolve_model_dir

    resolved = resolve_model_dir(model)
    # A pretrained name (resolved to the shipped folder) travels as the name: each node finds its
    # own installed copy. A folder travels as its absolute path, which every node must read.
    model_for_actors = os.fspath(model) if resolved != Path(model) else str(resolved.resolve())
    load_runner(resolved, backend)  # a bad model fails here, before any cluster work
    start_ray(cpus)
    import ray

    output = open_output(out)
    summary = CatalogueSummary(out=str(out), engine="ray")
    start = time.perf_counter()
    bar = progress_bar(progress)
    try:
        # Ray names files by absolute path: map them back to the names the sources gave.
        named: dict[str, str] = {}
        unreadable = []
        for path in skip_done(catalogue_paths(sources), output.done, summary):
            reason = _readable(path)
            if reason is None:
                named[os.path.abspath(path)] = path
            else:
                unreadable.append(error_row(path, reason))
        write_rows(output, summary, bar, unreadable)
        if named:
            actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
            ds = ray.data.read_binary_files(list(named), include_paths=True).map_batches(
                DeepAutoDNNPredictor,
                fn_constructor_kwargs={"model": model_for_actors, "backend": backend, "top_k": top_k},
                concurrency=(1, actors),
                num_cpus=1,
                batch_size=batch_size,
                batch_format="numpy",
            )
            try:
                for table in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
                    rows = table.to_pylist()
                    for r in rows:
                        r["file"] = named.get(r["file"], named.get(os.path.abspath(r["file"]), r["file"]))
                    write_rows(output, summary, bar, rows)
            except ray.exceptions.RayError as err:  # a task or actor failed on the cluster
                raise RayEngineError(
                    f"Ray stopped the catalogue ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
                    f"the rows written so far are in {out}: rerun to continue"
                ) from None
    finally:
        summary.seconds = time.perf_counter() - start
        bar.close()
        output.close()
    return summary
