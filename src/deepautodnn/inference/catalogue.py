"""A whole catalogue classified in one pass: `classify_catalogue(model, sources, out)`, behind
`deepautodnn predict MODEL SOURCE... --out labels.parquet`.

Worker processes decode and preprocess the photos (the costly part: a 600x500 JPEG takes several
milliseconds, the network well under one); this process gathers their model inputs into batches,
runs the model and the unknown-input detector on each, and appends the rows to the output as each
batch finishes (`catalogue_output`). At most a few chunks of paths are in flight at once, so memory
stays flat however large the catalogue. A rerun skips the files the output already holds, so the
same command resumes after a crash. An unreadable file is a row with its error.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from deepautodnn.data.preprocess import ImageError, load_preprocessed
from deepautodnn.errors import DeepAutoDNNError
from deepautodnn.inference.catalogue_output import error_row, open_output, result_row
from deepautodnn.inference.catalogue_sources import catalogue_paths
from deepautodnn.inference.predict import prediction_record, run_with_detection

CHUNK = 16  # paths per task sent to a worker: large enough to amortise the hop, small enough to balance
CHUNKS_IN_FLIGHT_PER_WORKER = 4  # bounds memory: decoded inputs waiting for the model


@dataclass
class CatalogueSummary:
    out: str
    classified: int = 0  # rows with a label written by this run
    errors: int = 0  # rows with an error written by this run
    unknown: int = 0  # of the classified, flagged unknown
    skipped: int = 0  # already in the output from an earlier run
    seconds: float = 0.0
    engine: str = "local"
    verb: str = "classified"  # what a row means: "classified", or "embedded" for `embed`

    @property
    def images_per_s(self) -> float:
        return (self.classified + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s}

    def line(self) -> str:
        return (
            f"{self.classified} {self.verb} ({self.unknown} unknown), {self.errors} unreadable, "
            f"{self.skipped} already in {self.out}; {self.images_per_s:.0f} images/s"
        )


def prepare_one(source: str | bytes, size: int, name: str) -> tuple[str, np.ndarray | None, dict | None, str | None]:
    """(file name, model input (size, size) uint8, evidence, error) for one image file or its bytes."""
    try:
        prepared = load_preprocessed(source, size, name=name)
    except ImageError as err:
        return name, None, None, str(err)
    except OSError as err:  # a read error in the middle of a file, a vanished mount
        return name, None, None, f"{name}: {err.strerror or err}"
    return name, prepared.image, prepared.evidence, None


def prepare_chunk(paths: list[str], size: int) -> list[tuple[str, np.ndarray | None, dict | None, str | None]]:
    """`prepare_one` for each path; runs in a worker."""
    return [prepare_one(path, size, path) for path in paths]


def prepared_inputs(paths: Iterator[str], size: int, workers: int) -> Iterator[tuple]:
    """prepare_chunk's tuples for every path, in order; across `workers` processes (0: here)."""
    chunks = iter(lambda: list(islice(paths, CHUNK)), [])
    if workers == 0:
        for chunk in chunks:
            yield from prepare_chunk(chunk, size)
        return
    # forkserver: the workers don't inherit this process's torch threads or model
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=exit_with, initargs=(os.getpid(),)) as pool:
        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(prepare_chunk, chunk, size))
                if len(pending) >= workers * CHUNKS_IN_FLIGHT_PER_WORKER:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        except BrokenProcessPool:
            raise DecodingWorkerDied(
                "a decoding worker process died (killed, or out of memory); the rows written so far are kept: "
                "rerun the same command to continue, with fewer --workers if memory is short"
            ) from None


class DecodingWorkerDied(DeepAutoDNNError):
    """A worker process of the catalogue's pool died; what was written is kept."""


def exit_with(parent_pid: int, every_s: float = 1.0) -> None:
    """A worker's initializer: end the worker once `parent_pid` is gone. A parent killed with
    SIGKILL cannot shut its pool down, and its workers would wait on the task queue for ever."""

    def watch() -> None:
        while process_alive(parent_pid):
            time.sleep(every_s)
        os._exit(0)

    threading.Thread(target=watch, name="deepautodnn-parent-watch", daemon=True).start()


def process_alive(pid: int) -> bool:
    """Whether `pid` runs. A killed process that its parent has not reaped yet (a zombie) is not
    running: its supervisor may wait for our end of its pipes before reaping it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process under a reused pid
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS): os.kill's answer stands
        return True
    return state not in ("Z", "X")


def load_runner(model, backend: str = "auto", echo: Callable[[str], None] | None = None):
    """(backend, unknown detector or None, class names, input size) for a model directory or name."""
    from deepautodnn.inference.backends import make_backend
    from deepautodnn.inference.ood import UnknownDetector
    from deepautodnn.models.pretrained import resolve_model_dir
    from deepautodnn.models.serialization import load_config

    model_dir = resolve_model_dir(model)
    cfg = load_config(model_dir)
    runner = make_backend(model_dir, backend, echo=echo)
    detector = UnknownDetector.load(model_dir)
    return runner, detector, list(cfg.model.class_names), cfg.model.image_size


def classify_batch(
    runner, detector, class_names, prepared: list[tuple], top_k: int, embedding: str | None = None
) -> list[dict]:
    """Output rows for a batch of prepare_chunk tuples: the model's answer, or the file's error.
    With `embedding` (a space; the runner must be a torch backend) each row has its `vector` too."""
    good = [p for p in prepared if p[3] is None]
    rows_by_file = {}
    if good:
        images = np.stack([p[1] for p in good])  # (N, size, size) uint8
        out, scores = run_with_detection(runner, detector, images, [p[2] for p in good], embedding=embedding)
        k = max(1, min(top_k, len(class_names)))
        for i, (file, *_rest) in enumerate(good):
            score = None if scores is None else scores[i]
            rows_by_file[i] = result_row(prediction_record(file, out.proba[i], class_names, k, score))
            if embedding is not None:
                rows_by_file[i]["vector"] = out.embedding[i].tolist()
    rows, i = [], 0
    for file, _image, _evidence, error in prepared:
        if error is None:
            rows.append(rows_by_file[i])
            i += 1
        else:
            rows.append(error_row(file, error) | ({} if embedding is None else {"vector": None}))
    return rows


def classify_catalogue(
    model,
    sources: Iterable[str],
    out: str | os.PathLike,
    *,
    top_k: int = 3,
    batch_size: int = 256,
    workers: int | None = None,
    backend: str = "auto",
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> CatalogueSummary:
    """Classify every image the `sources` name into the file `out` (.parquet, .csv or .jsonl),
    skipping the files it already holds. `model` is a model directory or a pretrained name;
    `workers` decoding processes (default: one per core; 0 decodes here)."""
    if top_k < 1:
        raise ValueError("--top-k must be >= 1")
    if batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    workers = check_workers(workers)
    runner, detector, class_names, size = load_runner(model, backend, echo)

    def rows_of(batch: list[tuple]) -> list[dict]:
        return classify_batch(runner, detector, class_names, batch, top_k)

    return run_catalogue(rows_of, size, sources, open_output(out), workers, batch_size, progress)


def check_workers(workers: int | None) -> int:
    from deepautodnn.utils.runtime import usable_cores  # here: it imports torch, which decoding workers need not

    workers = usable_cores() if workers is None else workers
    if workers < 0:
        raise ValueError("--workers must be >= 0")
    return workers


def run_catalogue(
    rows_of: Callable[[list[tuple]], list[dict]],
    size: int,
    sources: Iterable[str],
    output,
    workers: int,
    batch_size: int,
    progress: bool,
    verb: str = "classified",
) -> CatalogueSummary:
    """The loop that `predict --out` and `embed` share: the sources' paths not yet in `output`,
    decoded by `workers` processes, in batches of `batch_size` through `rows_of` (prepare_chunk
    tuples -> output rows), each batch written as it finishes. Closes `output`."""
    _share_cores(workers)
    summary = CatalogueSummary(out=str(output.path), engine="local", verb=verb)
    todo = skip_done(catalogue_paths(sources), output.done, summary)
    bar = progress_bar(progress, "classifying" if verb == "classified" else "embedding")
    start = time.perf_counter()
    try:
        prepared = prepared_inputs(todo, size, workers)
        while batch := list(islice(prepared, batch_size)):
            write_rows(output, summary, bar, rows_of(batch))
    finally:
        summary.seconds = time.perf_counter() - start
        bar.close()
        output.close()  # Parquet: the file is rewritten with every finished row, even on Ctrl-C
    return summary


def skip_done(paths: Iterator[str], done: set[str], summary: CatalogueSummary) -> Iterator[str]:
    for path in paths:
        if path in done:
            summary.skipped += 1
        else:
            done.add(path)  # named twice by the sources: classified once
            yield path


def write_rows(output, summary: CatalogueSummary, bar, rows: list[dict]) -> None:
    """A batch of rows into the output, counted in the summary and on the progress bar."""
    output.write(rows)
    count_rows(summary, rows)
    bar.update(len(rows))


def count_rows(summary: CatalogueSummary, rows: list[dict]) -> None:
    for r in rows:
        if r["error"] is None:
            summary.classified += 1
            summary.unknown += bool(r["unknown"])
        else:
            summary.errors += 1


def _share_cores(workers: int) -> None:
    """With decoding workers on every core, the model's own threads would only contend with them."""
    import torch

    from deepautodnn.utils.runtime import usable_cores

    cores = usable_cores()
    torch.set_num_threads(max(1, cores - workers) if workers else cores)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(show: bool, doing: str = "classifying"):
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(unit="img", desc=doing, file=sys.stderr, smoothing=0.1)
