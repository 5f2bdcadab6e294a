"""`deepautodnn bench`: what training and inference cost on this machine.

Training: images/s of each stage of the `paper` architecture with the paper's batch sizes, through
our loop (float32, and bf16 + channels_last where the CPU supports it) and through a naive
reference -- the same network trained the way a straightforward port would: a `Dataset` of
per-sample float tensors, a shuffling `DataLoader`, float32, and the encoder run at every DNN step.
Optionally, time-to-accuracy of the `fast` preset (one full run).

Inference: for the `paper` and `fast` architectures, each backend (torch float32, torch bf16,
ONNX Runtime float32, ONNX Runtime int8) at batch 1, 64 and 1024: latency, images/s and achieved
FLOP/s as a fraction of this CPU's peak. Two graphs: `classify` (encoder + DNN + softmax, what the
paper timed) and `predict` (plus the penultimate features that unknown-input detection reads, what
`predict`, `serve` and `export`'s backend choice run; the reconstruction only the web page asks for
is left out). Weights come from a trained model directory when given, else they are
random (speed does not depend on them); test accuracy is reported only for trained weights.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepautodnn.config import Config, get_preset
from deepautodnn.models.hybrid import DeepAutoDNN, build_model

STAGE_BATCHES = {"ae": "ae_batch_size", "dnn": "dnn_batch_size"}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ---------------------------------------------------------------- training


class _NaiveDataset(torch.utils.data.Dataset):
    """Per-sample conversion, as a straightforward port of the Keras code would write it."""

    def __init__(self, images_u8: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images_u8, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.tensor(self.images[i], dtype=torch.float32).unsqueeze(0) / 255.0  # (1, 28, 28)
        return x, int(self.labels[i])


def naive_stage_speed(cfg: Config, images_u8: np.ndarray, labels: np.ndarray, stage: str, seed: int = 0) -> float:
    """Images/s of the second of two epochs over `images_u8` in the naive reference loop, float32.

    The loop below is written as a user's straightforward port would be (the encoder and classifier
    called directly, the encoder rerun at every DNN step), so it stays explicit on purpose."""
    # The same initial weights as our loop, in the default layout a plain port keeps.
    model = build_model(cfg, seed=seed).to(memory_format=torch.contiguous_format)
    batch = getattr(cfg.train, STAGE_BATCHES[stage])
    loader = torch.utils.data.DataLoader(_NaiveDataset(images_u8, labels), batch_size=batch, shuffle=True)
    if stage == "ae":
        model.autoencoder.train()
        params, lr = model.autoencoder.parameters(), cfg.train.ae_lr
    else:
        model.eval()
        model.classifier.train()
        params, lr = model.classifier.parameters(), cfg.train.dnn_lr
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(2):  # the second epoch is timed, as in `our_stage_speed`
        start = time.perf_counter()
        for x, y in loader:
            if stage == "ae":
                loss = F.mse_loss(model.reconstruct(x), x)
            else:
                with torch.no_grad():
                    z = model.encoder(x)  # recomputed every step, though the encoder is frozen
                loss = F.cross_entropy(model.classifier(z), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return len(images_u8) / (time.perf_counter() - start)


def our_stage_speed(
    cfg: Config,
    images_u8: np.ndarray,
    labels: np.ndarray,
    stage: str,
    *,
    bf16: bool,
    channels_last: bool | None = None,
    seed: int = 0,
) -> dict:
    """Images/s of our training loop for one stage: the second of two epochs over `images_u8`
    (the first warms caches up). For the DNN stage, the one-off feature cache is timed apart.
    channels_last goes with bf16 unless told."""
    from deepautodnn.data.transforms import to_device_data
    from deepautodnn.training.stages import train_stage

    cfg = Config.from_dict(cfg.to_dict())
    cfg.train.bf16 = bf16
    cfg.train.channels_last = bf16 if channels_last is None else channels_last
    cfg.train.keep_best_epoch = False
    device = torch.device("cpu")
    data = to_device_data(images_u8, labels, np.arange(len(images_u8)), np.arange(0), device)
    model = build_model(cfg, seed=seed, device=device)  # channels_last with bf16, as set above
    rows = []
    start = time.perf_counter()
    setattr(cfg.train, f"{stage}_epochs", 2)
    train_stage(model, data, cfg.train, stage, seed=seed, device=device, log=rows.append)
    total = time.perf_counter() - start
    return {
        "images_per_s": len(images_u8) / rows[-1]["seconds"],
        "one_off_seconds": max(0.0, total - sum(r["seconds"] for r in rows)),
    }


def training_flops_per_image(cfg: Config, stage: str, cached_features: bool) -> int:
    """FLOPs of one training step per image (forward and backward, as FlopCounterMode counts
    them): the autoencoder for "ae"; for "dnn" the DNN, plus the frozen encoder's forward unless
    its features are cached."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg, seed=0)  # FLOPs do not depend on the weights
    x, y = torch.rand(2, 1, cfg.model.image_size, cfg.model.image_size), torch.tensor([0, 1])
    counter = FlopCounterMode(display=False)
    with counter:
        if stage == "ae":
            F.mse_loss(model.reconstruct(x), x).backward()
        else:
            with torch.no_grad():
                z = model.forward_features(x)  # (2, C, H', W')
            if cached_features:
                counter.flop_counts.clear()  # the features come from the cache, not the encoder
            logits, _ = model.forward_head(z)  # (2, num_classes)
            F.cross_entropy(logits, y).backward()
    return int(counter.get_total_flops()) // 2


def bench_training(images_u8: np.ndarray, labels: np.ndarray, n_images: int = 4096, peak_seconds: float = 3.0) -> dict:
    """Per stage of the `paper` architecture: naive reference vs our loop, float32 and bf16, each as
    achieved GFLOP/s and as a share of this CPU's float32 GEMM and convolution rates."""
    from deepautodnn.inference.timing import conv_peak_flops, cpu_peak_flops
    from deepautodnn.utils.runtime import bf16_supported

    cfg = get_preset("paper")
    x, y = images_u8[:n_images], labels[:n_images]
    # The limits first, on an idle process: what a tuned float32 kernel gets from this CPU.
    peak = {**cpu_peak_flops(seconds=peak_seconds), **conv_peak_flops(seconds=peak_seconds)}
    out = {"architecture": "paper", "n_images": len(x), "cpu_peak": peak, "stages": {}}
    # The naive loops first: ours tunes the process's allocator (`utils.runtime.keep_freed_memory`), and
    # the reference must run as a plain port would.
    naive_speeds = {stage: naive_stage_speed(cfg, x, y, stage) for stage in ("ae", "dnn")}
    for stage, naive in naive_speeds.items():
        row = {"batch_size": getattr(cfg.train, STAGE_BATCHES[stage]), "naive_images_per_s": naive}
        ours32 = our_stage_speed(cfg, x, y, stage, bf16=False)
        row.update(ours_fp32_images_per_s=ours32["images_per_s"], speedup_fp32=ours32["images_per_s"] / naive)
        # Float32 in the channels_last layout too: oneDNN's convolutions prefer it on some CPUs.
        cl32 = our_stage_speed(cfg, x, y, stage, bf16=False, channels_last=True)["images_per_s"]
        row.update(ours_fp32_channels_last_images_per_s=cl32, speedup_fp32_channels_last=cl32 / naive)
        if bf16_supported(torch.device("cpu")):
            ours16 = our_stage_speed(cfg, x, y, stage, bf16=True)
            row.update(ours_bf16_images_per_s=ours16["images_per_s"], speedup_bf16=ours16["images_per_s"] / naive)
        if stage == "dnn":
            row["feature_cache_seconds"] = ours32["one_off_seconds"]  # once per run, not per epoch
        # Achieved FLOP/s: how close each loop already is to what the CPU can do at all.
        naive_flops = training_flops_per_image(cfg, stage, cached_features=False)
        ours_flops = training_flops_per_image(cfg, stage, cached_features=True)
        row["naive_gflops_per_s"] = naive * naive_flops / 1e9
        for precision in ("fp32", "fp32_channels_last", "bf16"):
            if f"ours_{precision}_images_per_s" in row:
                row[f"ours_{precision}_gflops_per_s"] = row[f"ours_{precision}_images_per_s"] * ours_flops / 1e9
        for name in [k for k in row if k.endswith("_gflops_per_s")]:
            loop = name.removesuffix("_gflops_per_s")
            row[f"{loop}_of_gemm_peak"] = row[name] * 1e9 / peak["gemm_flops"]
            row[f"{loop}_of_conv_peak"] = row[name] * 1e9 / peak["conv_flops"]
        out["stages"][stage] = row
    return out


def time_to_accuracy(run_dir: str | Path, target: float = 0.934, seed: int = 0) -> dict:
    """One full `fast` run: wall time, test accuracy, and when validation first reached `target`."""
    from deepautodnn.config import resolve_preset
    from deepautodnn.training.metrics_log import MetricsLog
    from deepautodnn.training.run import train_run
    from deepautodnn.utils.runtime import bf16_supported

    cfg = resolve_preset("fast", bf16=bf16_supported(torch.device("cpu")))  # `fast-fp32` without bf16
    start = time.perf_counter()
    metrics = train_run(cfg, run_dir, seed=seed, progress=False, echo=lambda _: None)
    wall = time.perf_counter() - start
    elapsed, reached = 0.0, None
    for row in MetricsLog(Path(run_dir) / "metrics.csv").read():
        elapsed += float(row["seconds"])
        if row["val_acc"] and float(row["val_acc"]) >= target and reached is None:
            reached = elapsed
    return {
        "preset": cfg.preset,
        "seed": seed,
        "wall_seconds": wall,
        "test_accuracy": metrics["accuracy"],
        "target": target,
        "train_seconds_until_val_reached_target": reached,
        "run_dir": str(run_dir),
    }


# ---------------------------------------------------------------- inference


class ClassifyGraph(torch.nn.Module):
    """Encoder + DNN + softmax: float images (B, 1, H, W) -> probabilities (B, K)."""

    def __init__(self, model: DeepAutoDNN):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), 1)


def _graphs(model_dir: str | None, preset: str) -> tuple[dict, Config]:
    from deepautodnn.inference.graph import InferenceGraph, load_graph
    from deepautodnn.models.serialization import load_config

    if model_dir:
        cfg, predict_graph = load_config(model_dir), load_graph(model_dir)
        model = predict_graph.model
    else:
        cfg = get_preset(preset)
        # Random weights (speed does not depend on them), contiguous like a loaded model's.
        model = build_model(cfg, seed=0).to(memory_format=torch.contiguous_format).eval()
        predict_graph = InferenceGraph(model).eval()
    return {"classify": ClassifyGraph(model).eval(), "predict": predict_graph}, cfg


def _backends(graph, size: int, calibration_u8: np.ndarray, workdir: Path, outputs) -> list:
    """torch, torch-bf16 (if the CPU has it), onnx and onnx-int8 for one graph."""
    from deepautodnn.inference.backends import OnnxBackend, TorchBackend
    from deepautodnn.inference.export import export_graph, quantize_int8
    from deepautodnn.utils.runtime import bf16_supported

    backends = [TorchBackend(graph)]
    if bf16_supported(torch.device("cpu")):
        import copy

        backends.append(TorchBackend(copy.deepcopy(graph), bf16=True))
    fp32 = export_graph(graph, size, workdir / "graph.onnx", output_names=outputs)
    backends.append(OnnxBackend(fp32))
    int8 = quantize_int8(fp32, workdir / "graph.int8.onnx", calibration_u8)
    backends.append(OnnxBackend(int8, name="onnx-int8"))
    return backends


def bench_inference(
    test_images: np.ndarray,
    test_labels: np.ndarray | None,
    calibration_u8: np.ndarray,
    *,
    models: dict[str, str | None],
    batches=(1, 64, 1024),
    seconds_per_batch: float = 2.0,
) -> dict:
    """`models` maps an architecture name ("paper", "fast") to a model directory or None (random)."""
    from deepautodnn.inference.backends import backend_accuracy
    from deepautodnn.inference.graph import OUTPUT_NAMES
    from deepautodnn.inference.timing import backend_speed, cpu_peak_flops, flops_per_image

    peak = cpu_peak_flops()
    out = {"cpu_peak": peak, "batches": list(batches), "architectures": {}}
    for arch, model_dir in models.items():
        graphs, cfg = _graphs(model_dir, arch)
        size = cfg.model.image_size
        arch_out = {"model_dir": model_dir, "trained": bool(model_dir), "graphs": {}}
        if model_dir:  # what `predict` and `serve` would run here with --backend auto, and why
            from deepautodnn.inference.backends import choose_auto

            backend, reason = choose_auto(model_dir)
            arch_out["auto"] = {"backend": backend.name, "reason": reason}
        for graph_name, graph in graphs.items():
            # `predict` as predict and serve run it: no reconstruction (the page alone asks for one).
            flops = flops_per_image(graph, size, **({"reconstruction": False} if graph_name == "predict" else {}))
            rows = {}
            with tempfile.TemporaryDirectory() as tmp:
                outputs = ("probabilities",) if graph_name == "classify" else OUTPUT_NAMES
                for backend in _backends(graph, size, calibration_u8, Path(tmp), outputs):
                    speed = backend_speed(backend, test_images, batches, seconds_per_batch)
                    for row in speed.values():
                        achieved = row["images_per_s"] * flops
                        row["achieved_flops"] = achieved
                        row["fraction_of_gemm_peak"] = achieved / peak["gemm_flops"]
                        if peak["nominal_flops"]:
                            row["fraction_of_nominal_peak"] = achieved / peak["nominal_flops"]
                    row = {"speed": speed}
                    if model_dir and test_labels is not None:
                        row["test_accuracy"] = backend_accuracy(backend, test_images, test_labels)
                    rows[backend.name] = row
            arch_out["graphs"][graph_name] = {"flops_per_image": flops, "backends": rows}
        out["architectures"][arch] = arch_out
    return out


# ---------------------------------------------------------------- the command


def run_bench(
    what: str = "all",
    *,
    data_dir=None,
    models: dict[str, str | None] | None = None,
    train_images: int = 4096,
    time_to_accuracy_dir: str | None = None,
    seconds_per_batch: float = 2.0,
    batches=(1, 64, 1024),
) -> dict:
    """Everything `deepautodnn bench` measures, as one JSON-ready dict."""
    from deepautodnn.data.fashion_mnist import load_fashion_mnist
    from deepautodnn.utils.runtime import machine_info, provenance

    if what not in ("train", "infer", "all"):
        raise ValueError(f"--what must be train, infer or all, not {what!r}")
    train_x, train_y = load_fashion_mnist("train", data_dir)
    result = {"benchmark": "deepautodnn bench", "what": what, "machine": machine_info(), **provenance()}
    # Inference first: training tunes the process's allocator (`utils.runtime.keep_freed_memory`), which
    # `predict` and `serve` processes do not do.
    if what in ("infer", "all"):
        test_x, test_y = load_fashion_mnist("test", data_dir)
        result["inference"] = bench_inference(
            test_x,
            test_y,
            train_x[:1024],
            models=models or {"paper": None, "fast": None},
            batches=batches,
            seconds_per_batch=seconds_per_batch,
        )
    if what in ("train", "all"):
        result["training"] = bench_training(train_x, train_y, train_images)
        if time_to_accuracy_dir:
            result["time_to_accuracy"] = time_to_accuracy(time_to_accuracy_dir)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def bench_markdown(result: dict) -> str:
    """A short human summary of `run_bench`'s result."""
    machine = result["machine"]
    cpu_class = machine.get("cpu_class", "CPU class not recorded")
    lines = [f"# deepautodnn bench ({machine['cpu']}, {cpu_class}, {machine['torch_threads']} threads)", ""]
    training = result.get("training")
    if training:
        lines += [
            f"## Training, `paper` architecture, {training['n_images']} images per epoch",
            "",
            "| stage | batch | naive img/s | ours fp32 img/s | ours bf16 img/s | speed-up fp32 | speed-up bf16 |",
            "|---|---|---|---|---|---|---|",
        ]
        for stage, r in training["stages"].items():
            lines.append(
                f"| {stage} | {r['batch_size']} | {r['naive_images_per_s']:.0f} | "
                f"{r['ours_fp32_images_per_s']:.0f} | {r.get('ours_bf16_images_per_s', float('nan')):.0f} | "
                f"{r['speedup_fp32']:.1f}x | {r.get('speedup_bf16', float('nan')):.1f}x |"
            )
        peak = training.get("cpu_peak")
        if peak:
            lines += [
                "",
                f"Float32 limits here: GEMM {peak['gemm_flops'] / 1e9:.0f} GFLOP/s, 3x3 convolution "
                f"{peak['conv_flops'] / 1e9:.0f} GFLOP/s. Share of the convolution limit reached:",
                "",
                "| stage | naive | ours fp32 | ours bf16 |",
                "|---|---|---|---|",
            ]
            for stage, r in training["stages"].items():
                shares = [r.get(f"{loop}_of_conv_peak") for loop in ("naive", "ours_fp32", "ours_bf16")]
                lines.append(
                    f"| {stage} | " + " | ".join("-" if v is None else f"{v * 100:.0f}%" for v in shares) + " |"
                )
        lines.append("")
    tta = result.get("time_to_accuracy")
    if tta:
        lines += [
            f"`{tta['preset']}` seed {tta['seed']}: {tta['test_accuracy'] * 100:.2f}% test in "
            f"{tta['wall_seconds']:.0f} s wall.",
            "",
        ]
    inference = result.get("inference")
    if inference:
        peak = inference["cpu_peak"]
        lines += [
            f"## Inference (peak float32: best GEMM {peak['gemm_flops'] / 1e9:.0f} GFLOP/s measured"
            + (f", nominal {peak['nominal_flops'] / 1e9:.0f} GFLOP/s" if peak["nominal_flops"] else "")
            + ")",
            "",
            "| arch | graph | backend | batch | p50 ms | img/s | GFLOP/s | of GEMM peak | test acc |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for arch, a in inference["architectures"].items():
            for graph, g in a["graphs"].items():
                for name, b in g["backends"].items():
                    acc = f"{b['test_accuracy'] * 100:.2f}%" if "test_accuracy" in b else "-"
                    for batch, s in b["speed"].items():
                        lines.append(
                            f"| {arch} | {graph} | {name} | {batch} | {s['p50_ms']:.3f} | "
                            f"{s['images_per_s']:.0f} | {s['achieved_flops'] / 1e9:.1f} | "
                            f"{s['fraction_of_gemm_peak'] * 100:.0f}% | {acc} |"
                        )
        lines.append("")
    lines.append(f"Peak RSS {result['peak_rss_mib']:.0f} MiB.")
    return "\n".join(lines)
