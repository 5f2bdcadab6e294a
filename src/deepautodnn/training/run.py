"""One training run end to end: data, the stages in order, the model directory and the report.

The run directory is itself a model directory (`config.json`, `model.safetensors`,
`metrics.json`) plus `metrics.csv`, `report.md`, the figures, and `checkpoints/` holding each
finished stage and the full training state after every epoch (see `training.state`), so that an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from deepautodnn.config import Config
from deepautodnn.data.sources import RunData, load_run_data
from deepautodnn.data.transforms import TrainingData, to_device_data
from deepautodnn.errors import DeepAutoDNNError, WriteError
from deepautodnn.inference.evaluate import evaluate_model, metrics_markdown
from deepautodnn.inference.ood import DEFAULT_FALSE_ALARM_RATE
from deepautodnn.models.hybrid import DeepAutoDNN, build_model
from deepautodnn.models.serialization import (
    CONFIG_FILE,
    config_to_json,
    load_config,
    load_config_record,
    load_model,
    load_weights,
    save_model,
    save_weights,
)
from deepautodnn.training import distributed
from deepautodnn.training.distributed import DistContext
from deepautodnn.training.metrics_log import MetricsLog
from deepautodnn.training.stages import stage_plan, train_stage
from deepautodnn.training.state import (
    Checkpointer,
    GracefulStop,
    NonFiniteLossError,
    TrainingInterrupted,
    TrainingState,
)
from deepautodnn.utils.extras import MissingExtraError
from deepautodnn.utils.files import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from deepautodnn.utils.runtime import machine_info, provenance, select_device
from deepautodnn.version import __version__

CHECKPOINT_DIR = "checkpoints"
PROGRESS_FILE = "progress.json"


class RunError(DeepAutoDNNError, RuntimeError):
    """The run directory can't be used as asked (the message says why and what to do)."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_training_split(cfg: Config, data_dir=None, train_limit: int | None = None, source: str | None = None):
    """The run's training images and labels, with its (train_idx, val_idx) split.

    With `train_limit`, only the first N images are used and the validation split shrinks to a
    tenth of them. `source` is a `--data` value (default Fashion-MNIST; see `sources`).
    """
    d = load_run_data_from_config(cfg, source, data_dir, train_limit)
    return d.images, d.labels, d.train_idx, d.val_idx


def load_run_data_from_config(cfg: Config, source, data_dir=None, train_limit=None) -> RunData:
    return load_run_data(
        source,
        size=cfg.model.image_size,
        val_size=cfg.train.val_size,
        split_seed=cfg.train.split_seed,
        data_dir=data_dir,
        train_limit=train_limit,
    )


def load_model_run_data(model_dir, data_dir=None) -> RunData:
    """The same images and splits a model directory was trained on (from its config.json)."""
    cfg, saved = load_config_record(model_dir)
    return load_run_data_from_config(cfg, saved.get("data"), data_dir, saved.get("train_limit"))


def train_run(
    cfg: Config,
    run_dir: str | Path,
    *,
    seed: int = 0,
    data_dir=None,
    device: str = "auto",
    train_limit: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
    data: str | None = None,
    deterministic: bool = False,
    echo: Callable[[str], None] = _stderr,
) -> dict:
    """Train every stage of `cfg` into `run_dir`, then evaluate on the test split.

    `data` is where the images come from (`--data`: Fashion-MNIST by default, or
    `imagefolder:PATH` / `csv:PATH`, see `sources`); the class names come with it.
    Returns the metrics written to `run_dir/metrics.json`.

    The full training state is saved after every epoch (see `training.state`); with `resume`, the
    run in `run_dir` continues from its newest checkpoint with its own saved config and seed, and
    ends with the same weights as a run never interrupted. Ctrl-C or SIGTERM saves and raises
    TrainingInterrupted. `deterministic` makes torch use deterministic kernels only.

    Under torchrun with several processes this is data-parallel (see `distributed`): every rank
    trains, rank 0 alone writes files and prints.
    """
    given = _Settings(cfg=cfg, seed=seed, train_limit=train_limit, data=data, deterministic=deterministic)
    run = _start_run(Path(run_dir), given, resume=resume, device=device, progress=progress, echo=echo)
    source = _load_source(run, data_dir)
    if run.is_main:
        _write_config(run)
    tensors = to_device_data(source.images, source.labels, source.train_idx, source.val_idx, run.device)
    run.echo(_banner(run, source))
    model = build_model(run.cfg, seed=run.seed, device=run.device)
    log = MetricsLog(run.run_dir / "metrics.csv", echo=run.echo)
    checkpointer = Checkpointer(run.ckpt_dir, enabled=run.is_main)
    state = _resume_point(run, model, checkpointer, log) if resume else None
    _train_stages(run, model, tensors, log, checkpointer, state)

    model = model.to(memory_format=torch.contiguous_format).eval()
    if not run.is_main:  # the other ranks are done: their weights are rank 0's
        distributed.barrier(run.ctx)
        distributed.shutdown()
        return {}
    metrics = _test_and_save(run, model, source)
    _calibrate_unknown(model, run.cfg, source, run.run_dir, run.device, run.echo)
    write_report(run.run_dir, metrics)
    distributed.barrier(run.ctx)
    distributed.shutdown()
    return metrics


@dataclass
class _Settings:
    """What a run trains with: `train_run`'s arguments, or on a resume those saved with the run."""

    cfg: Config
    seed: int
    train_limit: int | None
    data: str | None  # a `--data` value; None is Fashion-MNIST
    deterministic: bool


@dataclass
class _Run(_Settings):
    """One run under way: its settings, where it runs, and the stages finished so far."""

    run_dir: Path
    device: torch.device  # this rank's
    ctx: DistContext
    echo: Callable[[str], None]
    progress: bool
    completed: list[str]  # finished stages, in order (a resume starts with those of before)
    summaries: dict[str, dict]  # their `fit` summaries

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR


def _start_run(run_dir: Path, given: _Settings, *, resume: bool, device: str, progress, echo) -> _Run:
    """The run's settings (on a resume, the saved ones), device and rank; the folder checked."""
    if resume:
        settings, completed, summaries = _saved_settings(run_dir, given)
    elif (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    else:
        settings, completed, summaries = given, [], {}
    if progress is None:
        progress = sys.stderr.isatty()
    if settings.deterministic:
        use_deterministic_kernels()
    dev = select_device(device)
    ctx = distributed.init(dev)
    dev = distributed.rank_device(dev, ctx)
    if ctx.is_main:
        _check_writable(run_dir)  # before minutes of data loading, not after hours of training
    else:  # rank 0 alone prints
        echo, progress = (lambda _: None), False
    return _Run(
        **vars(settings),
        run_dir=run_dir,
        device=dev,
        ctx=ctx,
        echo=echo,
        progress=progress,
        completed=completed,
        summaries=summaries,
    )


def _saved_settings(run_dir: Path, given: _Settings) -> tuple[_Settings, list[str], dict]:
    """The settings saved in `run_dir` (`given` fills what an older run did not save), and the
    stages it finished with their summaries."""
    if not (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}); start a run without --resume")
    cfg, saved = load_config_record(run_dir)
    settings = _Settings(
        cfg=cfg,
        seed=saved.get("seed", given.seed),
        train_limit=saved.get("train_limit", given.train_limit),
        data=saved.get("data", given.data),
        deterministic=saved.get("deterministic", given.deterministic),
    )
    progress_path = run_dir / CHECKPOINT_DIR / PROGRESS_FILE
    done = read_json(progress_path) if progress_path.exists() else {}
    return settings, done.get("completed", []), done.get("summaries", {})


def _load_source(run: _Run, data_dir) -> RunData:
    """The run's images, labels and splits; the config takes the data's class names."""
    source = load_run_data_from_config(run.cfg, run.data, data_dir, run.train_limit)
    for item in source.skipped:
        run.echo(f"skipped {item['error']}")
    run.cfg.model.class_names = tuple(source.class_names)
    return source


def _write_config(run: _Run) -> None:
    config = config_to_json(
        run.cfg,
        seed=run.seed,
        train_limit=run.train_limit,
        data=run.data,
        world_size=run.ctx.world_size,
        deterministic=run.deterministic,
    )
    atomic_write_json(run.run_dir / CONFIG_FILE, config)


def _banner(run: _Run, source: RunData) -> str:
    return (
        f"deepautodnn {__version__}: preset {run.cfg.preset}, seed {run.seed}, device {run.device}, "
        f"{len(source.train_idx)} train / {len(source.val_idx)} val / {len(source.test_labels)} test images, "
        f"{len(source.class_names)} classes -> {run.run_dir}"
        + (f" ({run.ctx.world_size} ranks, DistributedDataParallel)" if run.ctx.enabled else "")
    )


def _resume_point(run: _Run, model: DeepAutoDNN, checkpointer: Checkpointer, log: MetricsLog) -> TrainingState | None:
    """On a resume: the model as the last finished stage left it, metrics.csv cut back to the
    checkpoint, and the checkpoint of the stage in progress (None if it has none)."""
    state = checkpointer.latest(run.echo)
    if state is not None and state.stage in run.completed:
        state = None  # that stage's final weights are in its own file
    if run.completed:
        load_weights(run.ckpt_dir / f"{run.completed[-1]}.safetensors", model)
    if state is not None:
        run.echo(f"resuming from {state.position}")
    elif run.completed:
        run.echo(f"resuming after finished stage(s): {', '.join(run.completed)}")
    else:
        run.echo("resuming from the start")
    if run.is_main:
        log.keep(set(run.completed), state.stage if state else None, state.meta["epoch"] if state else 0)
    return state


def _train_stages(
    run: _Run,
    model: DeepAutoDNN,
    tensors: TrainingData,
    log: MetricsLog,
    checkpointer: Checkpointer,
    state: TrainingState | None,
) -> None:
    """Every stage not finished yet, in order; each one's weights and summary saved as it ends."""
    with GracefulStop(run.echo) as stop:
        for stage in stage_plan(run.cfg):
            if stage in run.completed:
                continue
            if stop():  # asked to stop just as the previous stage finished
                raise _with_resume_hint(TrainingInterrupted(f"stopped before stage {stage}"), run.run_dir)
            start = time.perf_counter()
            stage_state = state if state is not None and state.stage == stage else None
            summary = _train_stage(run, stage, model, tensors, log, checkpointer, stage_state, stop)
            # Time before an interruption counts too (`fit` carries it in the checkpoint).
            summary["seconds"] = max(summary.get("seconds", 0.0), time.perf_counter() - start)
            run.completed.append(stage)
            run.summaries[stage] = summary
            if run.is_main:  # save the finished stage before the next one starts
                save_weights(run.ckpt_dir / f"{stage}.safetensors", model)
                atomic_write_json(
                    run.ckpt_dir / PROGRESS_FILE, {"completed": run.completed, "summaries": run.summaries}
                )
            run.echo(f"stage {stage} done in {summary['seconds']:.1f}s (best epoch {summary['best_epoch']})")


def _train_stage(
    run: _Run,
    stage: str,
    model: DeepAutoDNN,
    tensors: TrainingData,
    log: MetricsLog,
    checkpointer: Checkpointer,
    resume: TrainingState | None,
    stop: GracefulStop,
) -> dict:
    """One stage; a non-finite loss or an interruption comes out saying how to go on."""
    common = dict(
        seed=run.seed,
        device=run.device,
        log=log,
        progress=run.progress,
        ctx=run.ctx,
        checkpointer=checkpointer,
        resume=resume,
        should_stop=stop,
    )
    try:
        return train_stage(model, tensors, run.cfg.train, stage, **common)
    except NonFiniteLossError as err:
        last = checkpointer.latest()
        kept = f"the last good checkpoint ({last.position}) is kept in {run.ckpt_dir}" if last else "no epoch finished"
        raise NonFiniteLossError(
            f"{err}; training stopped, {kept}. Lower the learning rate and train again, or resume to retry"
        ) from None
    except TrainingInterrupted as err:
        raise _with_resume_hint(err, run.run_dir) from None


def _test_and_save(run: _Run, model: DeepAutoDNN, source: RunData) -> dict:
    """Test-split metrics; the model directory (config, weights, metrics) written with them."""
    test = evaluate_model(model, source.test_images, source.test_labels, device=run.device)
    metrics = {
        "split": "test",
        **test,
        "stages": run.summaries,
        "train_seconds": sum(s["seconds"] for s in run.summaries.values()),
        "seed": run.seed,
        "preset": run.cfg.preset,
        "train_limit": run.train_limit,
        "data": run.data or "fashion-mnist",
        "skipped_files": source.skipped,
        "device": str(run.device),
        "world_size": run.ctx.world_size,
        "deterministic": run.deterministic,
        "machine": machine_info(),
        **provenance(),
    }
    save_model(
        run.run_dir,
        model,
        run.cfg,
        metrics,
        seed=run.seed,
        train_limit=run.train_limit,
        data=run.data,
        deterministic=run.deterministic,
    )
    return metrics


def _with_resume_hint(err: TrainingInterrupted, run_dir: Path) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"{err}; the state is saved in {run_dir / CHECKPOINT_DIR}. Continue with `deepautodnn train --resume {run_dir}`"
    )


def use_deterministic_kernels() -> None:
    """Only deterministic kernels from here on: same seed, same machine -> the same weights."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _check_writable(run_dir: Path) -> None:
    """Fail at once, naming the folder, if the run can't be written (no permission, no space)."""
    probe = run_dir / ".deepautodnn-write-test"
    try:
        atomic_write_bytes(probe, b"ok")
    except WriteError as err:
        raise RunError(
            f"{run_dir}: the run folder can't be written ({err.strerror}); choose another --out or free space"
        ) from None
    probe.unlink(missing_ok=True)
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):
        for leftover in folder.glob(".*.tmp"):  # temporary files of writes a kill cut short
            leftover.unlink(missing_ok=True)


def calibrate_model_dir(
    model_dir: str | Path,
    *,
    data_dir=None,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    device="cpu",
    backends=None,
    half_bank: bool = False,
    echo=lambda m: None,
):
    """Fit unknown-input detection on the data and split the model was trained on; save it beside
    the model (see `training.calibrate.fit_detector`)."""
    from deepautodnn.training.calibrate import fit_detector

    data = load_model_run_data(model_dir, data_dir)
    return fit_detector(
        load_model(model_dir),
        load_config(model_dir),
        data.images,
        data.labels,
        data.train_idx,
        data.val_idx,
        model_dir,
        false_alarm_rate=false_alarm_rate,
        device=device,
        backends=backends,
        half_bank=half_bank,
        echo=echo,
    )


def _calibrate_unknown(model, cfg: Config, source: RunData, run_dir: Path, dev, echo) -> None:
    """unknown.json beside the model, fit on the run's splits (skipped if validation is too small)."""
    from deepautodnn.training.calibrate import fit_detector

    if len(source.val_idx) < 20:
        echo("validation split too small to calibrate unknown-input detection; skipped")
        return
    fit_detector(
        model, cfg, source.images, source.labels, source.train_idx, source.val_idx, run_dir, device=dev, echo=echo
    )


def write_report(run_dir: str | Path, metrics: dict) -> str:
    """report.md with the Table V-style metrics, and the Fig. 4-6 PNGs beside it."""
    from deepautodnn.utils.plots import plot_confusion_matrix, plot_training_curves

    run_dir = Path(run_dir)
    try:
        plot_confusion_matrix(metrics, run_dir / "confusion_matrix.png")
        rows = MetricsLog(run_dir / "metrics.csv").read()
        if rows:
            plot_training_curves(rows, run_dir / "training_curves.png")
        figures = "\n![Confusion matrix](confusion_matrix.png)\n\n![Training curves](training_curves.png)\n"
    except MissingExtraError as err:  # the run is whole without its figures
        _stderr(f"deepautodnn: no figures in report.md: {err}")
        figures = ""
    stage_lines = [
        f"- stage `{name}`: best epoch {s['best_epoch']}, {s['seconds']:.1f} s"
        for name, s in metrics.get("stages", {}).items()
    ]
    text = (
        f"# DeepAutoDNN run report\n\nPreset `{metrics.get('preset')}`, seed {metrics.get('seed')}, "
        f"training time {metrics.get('train_seconds', 0):.1f} s.\n\n"
        + "\n".join(stage_lines)
        + "\n\n"
        + metrics_markdown(metrics)
        + figures
    )
    atomic_write_text(run_dir / "report.md", text)
    return text


__all__ = ["train_run", "write_report", "calibrate_model_dir", "RunError"]
