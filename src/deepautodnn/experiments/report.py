"""The paper's whole evaluation from our own runs, beside the paper's own numbers, in one file.

`build_report` gathers the blocks (headings, paragraphs, tables, figures) from a run directory and,
optionally, a `baselines` folder and an `ablate` folder; `render_markdown` and `render_html` turn the
same blocks into a self-contained Markdown or HTML file with the figures embedded as data URIs, so
both formats always show the same numbers.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from deepautodnn import paper
from deepautodnn.data.fashion_mnist import load_fashion_mnist
from deepautodnn.errors import ModelFileError
from deepautodnn.experiments.claims import Evidence, Latency, accuracy_of_run, claims_rows
from deepautodnn.experiments.markdown import RENDERERS, Figure, Heading, Paragraph, Table, pct
from deepautodnn.models.hybrid import to_unit
from deepautodnn.models.serialization import METRICS_FILE, load_config, load_model
from deepautodnn.utils.files import atomic_write_text, read_json


def _png(plot, *args, **kwargs) -> bytes:
    buf = io.BytesIO()
    plot(*args, buf, **kwargs)
    return buf.getvalue()


def table_iv(metrics: dict, baselines: dict[str, dict]) -> Table:
    """The paper's Table IV rows in its order, each with our measured accuracy where we rebuilt it,
    then the classic pixel baselines the paper does not list."""
    by_row = {r["paper_row"]: r for r in baselines.values() if r.get("paper_row")}
    rows = []
    for name, paper_acc in paper.TABLE_IV.items():
        if name == "DeepAutoNN-ours":
            rows.append(
                [
                    name,
                    pct(paper_acc),
                    pct(metrics["accuracy"]),
                    f"{metrics.get('train_seconds', 0):.0f}",
                    f"this run: preset {metrics.get('preset')}, seed {metrics.get('seed')}",
                ]
            )
        elif name in by_row:
            r = by_row[name]
            rows.append(
                [
                    name,
                    pct(paper_acc),
                    pct(r["accuracy"]),
                    f"{r['train_seconds']:.0f}",
                    f"rebuilt as `{r['name']}`: {r['title']}",
                ]
            )
        elif name in paper.NOT_REBUILT:
            rows.append([name, pct(paper_acc), "—", "—", f"not rebuilt: {paper.NOT_REBUILT[name]}"])
        else:
            rows.append([name, pct(paper_acc), "—", "—", "no result in the baselines folder"])
    for r in baselines.values():
        if not r.get("paper_row"):
            rows.append(
                [
                    r["title"],
                    "—",
                    pct(r["accuracy"]),
                    f"{r['train_seconds']:.0f}",
                    f"classic pixel baseline `{r['name']}`",
                ]
            )
    return Table(["Model", "Paper accuracy", "Our accuracy", "Our train s", "Notes"], rows)


def table_v(metrics: dict) -> Table:
    rows = []
    for name, m in metrics["per_class"].items():
        p_prec, p_rec, p_f1 = paper.TABLE_V.get(name, (None, None, None))
        cell = lambda v: "—" if v is None else str(v)  # noqa: E731
        rows.append(
            [
                name,
                cell(p_prec),
                f"{m['precision'] * 100:.1f}",
                cell(p_rec),
                f"{m['recall'] * 100:.1f}",
                cell(p_f1),
                f"{m['f1'] * 100:.1f}",
                f"{m['specificity'] * 100:.1f}",
            ]
        )
    mac = metrics["macro"]
    rows.append(
        [
            "macro average",
            "—",
            f"{mac['precision'] * 100:.1f}",
            "—",
            f"{mac['recall'] * 100:.1f}",
            "—",
            f"{mac['f1'] * 100:.1f}",
            f"{mac['specificity'] * 100:.1f}",
        ]
    )
    return Table(
        [
            "Label",
            "Paper precision",
            "Our precision",
            "Paper recall",
            "Our recall",
            "Paper F1",
            "Our F1",
            "Our specificity",
        ],
        rows,
    )


def _figures(model, metrics: dict, run_dir: Path, images: np.ndarray, labels: np.ndarray, finetuned: bool) -> list:
    from sklearn.decomposition import PCA

    from deepautodnn.inference.evaluate import predict_proba
    from deepautodnn.training.metrics_log import MetricsLog
    from deepautodnn.utils.plots import (
        plot_confusion_matrix,
        plot_latent_map,
        plot_mistakes,
        plot_reconstructions,
        plot_training_curves,
    )

    names = metrics["class_names"]
    blocks = [
        Figure("Fig. 4: confusion matrix on the test split (rows: true class).", _png(plot_confusion_matrix, metrics))
    ]
    curves = MetricsLog(run_dir / "metrics.csv").read()
    if curves:
        blocks.append(
            Figure(
                "Figs. 5-6: per-epoch loss and accuracy of each stage (validation split dashed).",
                _png(plot_training_curves, curves),
            )
        )
    # One test image per class: the autoencoder's input and its reconstruction.
    firsts = [int(np.flatnonzero(labels == k)[0]) for k in range(len(names)) if (labels == k).any()]
    x = to_unit(torch.from_numpy(images[firsts]).unsqueeze(1))  # (K, 1, 28, 28) in [0, 1]
    with torch.inference_mode():
        recon = model.reconstruct(x)
    caption = "Autoencoder reconstructions: one test image per class (top) and its decoding (bottom)."
    if finetuned:
        caption += (
            " This run fine-tuned the encoder end to end after stage 1 and the decoder was not trained "
            "with it, so the reconstructions show how far the encoder moved from the autoencoder."
        )
    blocks.append(
        Figure(caption, _png(plot_reconstructions, x[:, 0].numpy(), recon[:, 0].float().numpy(), labels[firsts], names))
    )
    proba = predict_proba(model, images)
    pred, conf = proba.argmax(1), proba.max(1)
    wrong = np.flatnonzero(pred != labels)
    worst = wrong[np.argsort(-conf[wrong])][:16]
    blocks.append(
        Figure(
            f"The {len(worst)} most confident mistakes on the test split: true -> predicted (confidence).",
            _png(plot_mistakes, images[worst], labels[worst], pred[worst], conf[worst], names),
        )
    )
    sample = slice(0, min(2000, len(images)))
    with torch.inference_mode():
        codes = model.forward_features(to_unit(torch.from_numpy(images[sample]).unsqueeze(1)))  # (n, C, H', W')
    points = PCA(2, random_state=0).fit_transform(codes.flatten(1).float().numpy())
    blocks.append(
        Figure(
            f"The encoder's code for the first {len(points)} test images, projected by PCA to 2-D.",
            _png(plot_latent_map, points, labels[sample], names, title="Latent space (PCA of the encoder output)"),
        )
    )
    return blocks


def build_report(
    run_dir: str | Path,
    *,
    baselines_dir=None,
    ablation_dir=None,
    with_runs=(),
    data_dir=None,
    timing_repeats: int = 200,
) -> list:
    """Every block of the report, in order. `with_runs`: other run directories (e.g. a `paper` run
    beside a `fast` one) whose test accuracy the claims table also judges."""
    from deepautodnn.data.sources import validation_size
    from deepautodnn.experiments.baselines import load_results
    from deepautodnn.inference.timing import inference_timing
    from deepautodnn.utils.runtime import machine_info

    run_dir = Path(run_dir)
    for d in (run_dir, *map(Path, with_runs)):
        if not (d / METRICS_FILE).exists():
            raise ModelFileError(f"{d}: no {METRICS_FILE}; is this a finished `deepautodnn train` run?")
    metrics = read_json(run_dir / METRICS_FILE)
    if metrics.get("data", "fashion-mnist") != "fashion-mnist":
        raise ModelFileError(
            f"{run_dir}: trained on {metrics['data']}; the report compares with the paper's "
            f"Fashion-MNIST results, so it needs a Fashion-MNIST run"
        )
    cfg = load_config(run_dir)
    model = load_model(run_dir).eval()
    images, labels = load_fashion_mnist("test", data_dir)
    baselines = load_results(baselines_dir) if baselines_dir else {}
    if baselines_dir and not baselines:
        raise ModelFileError(f"{baselines_dir}: no comparator results (run `deepautodnn baselines --out DIR`)")
    timing = inference_timing(model, torch.from_numpy(images).unsqueeze(1), timing_repeats, batches=(1024,))
    machine = machine_info()
    n_images = metrics.get("train_limit") or 60_000
    n_val = validation_size(cfg.train.val_size, n_images, metrics.get("train_limit"))
    latency_s = timing["batch1_latency_ms"]["p50"] / 1e3
    batched_s = 1 / timing["throughput_images_per_s"]["1024"]

    ablation = None
    if ablation_dir:
        from deepautodnn.experiments.ablation import load_ablation

        ablation = load_ablation(ablation_dir)
    evidence = Evidence(
        accuracy=[accuracy_of_run(run_dir), *(accuracy_of_run(d) for d in with_runs)],
        comparators=baselines,
        latency=[Latency(cfg.preset, latency_s, f"{timing['backend']}, CPU {machine['cpu_class']}")],
        ablation_summary=(ablation or {}).get("summary", []),
        per_class_f1={name: m["f1"] for name, m in metrics["per_class"].items()},
        per_class_source=f"{cfg.preset} seed {metrics.get('seed')}",
    )
    blocks: list = [
        Heading("DeepAutoDNN: the paper's evaluation, reproduced", 1),
        Paragraph(
            f"Run {run_dir.name}: preset {cfg.preset}, seed {metrics.get('seed')}, trained in "
            f"{metrics.get('train_seconds', 0):.0f} s on {metrics.get('device', '?')} "
            f"({(metrics.get('machine') or {}).get('cuda') or (metrics.get('machine') or {}).get('cpu', '?')}). "
            f"Test accuracy {pct(metrics['accuracy'])} on {metrics['n']} test images; the paper reports "
            f"{pct(paper.TEST_ACCURACY)}. Every figure below was measured on our own split: "
            f"{n_images:,} training images, of which {n_val:,} (stratified) validate, and the official "
            f"test split, used once per model."
        ),
        Heading("The paper's claims"),
        Paragraph(
            "Each claim judged by the runs that test it: the paper's architecture only by `paper` runs, "
            '"the hybrid can" by the best run given (this one and any --with-run).'
        ),
        Table(*claims_rows(evidence)),
        Heading("Table IV: comparison with other methods"),
        Paragraph(
            "The paper's figures are as printed; ours are test accuracy of models we trained and "
            "tuned on the validation split only (see `deepautodnn baselines`)."
            if baselines
            else "No baselines folder was given (--baselines DIR), so only our run is shown."
        ),
        table_iv(metrics, baselines),
        Heading("Table V: per-class precision, recall and F1"),
        Paragraph("In percent. The paper gives no specificity; ours is TN / (TN + FP)."),
        table_v(metrics),
        Heading("Figures"),
        *_figures(model, metrics, run_dir, images, labels, finetuned="finetune" in metrics.get("stages", {})),
        Heading("Inference time"),
        Paragraph(
            f"Measured now on this machine ({machine['cpu']}, {timing['torch_threads']} torch threads, "
            f"{timing['backend']}), encoder + DNN + softmax, uint8 test images."
        ),
        Table(
            ["Measure", "Paper", "Ours"],
            [
                [
                    "Seconds per image, one image at a time (median)",
                    f"{paper.SECONDS_PER_IMAGE:.4f}",
                    f"{latency_s:.5f}",
                ],
                ["Seconds per image, batches of 1,024", "—", f"{batched_s:.6f}"],
            ],
        ),
    ]
    if ablation is not None:
        from deepautodnn.experiments.ablation import ablation_table

        device = (ablation.get("machine") or {}).get("cuda") or (ablation.get("machine") or {}).get("cpu", "?")
        blocks += [
            Heading("Ablations (not in the paper)"),
            Paragraph(
                f"Preset {ablation['preset']} architecture, test accuracy, mean ± sample std over seeds, "
                f"run on {device}. frozen: the paper's way (encoder frozen after pretraining); "
                f"finetuned: pretrained, then trained end to end; scratch: no autoencoder "
                f"pretraining. The autoencoder pretrains on all training images without labels."
            ),
            Table(*ablation_table(ablation)),
        ]
    return blocks


def write_paper_report(
    run_dir: str | Path, out_dir: str | Path | None = None, formats=("md", "html"), **kwargs
) -> list[Path]:
    """Build the report once and write OUT/paper_report.{md,html}; the paths written."""
    blocks = build_report(run_dir, **kwargs)
    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"paper_report.{fmt}"
        atomic_write_text(path, RENDERERS[fmt](blocks))
        paths.append(path)
    return paths
