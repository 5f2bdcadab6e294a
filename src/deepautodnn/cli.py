"""The `deepautodnn` command: a thin layer over the Python API, one subcommand per job."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

# Only light modules at the top: `deepautodnn --help` must answer without importing torch.
from deepautodnn.config import ABLATION_VARIANTS, PRESETS, Config, get_preset, resolve_preset
from deepautodnn.inference.names import BACKENDS, INT8_ONNX_FILE
from deepautodnn.version import __version__


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepautodnn", description="DeepAutoDNN apparel classifier.")
    parser.add_argument("--version", action="version", version=f"deepautodnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on Fashion-MNIST and report on the test split")
    t.add_argument("--preset", default="fast", choices=list(PRESETS), help="settings to use (default: fast)")
    t.add_argument(
        "--data",
        default="fashion-mnist",
        help="images to train on: fashion-mnist (default), imagefolder:PATH (one sub-folder per class) "
        "or csv:PATH (Kaggle layout: label,pixel1..pixel784)",
    )
    t.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files (default: search, then download)")
    t.add_argument("--out", help="run directory (default: runs/PRESET-seedN)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto = cuda if available)")
    t.add_argument("--ae-epochs", type=int, help="override stage-1 (autoencoder) epochs")
    t.add_argument("--dnn-epochs", type=int, help="override stage-2 (DNN on frozen encoder) epochs")
    t.add_argument("--finetune-epochs", type=int, help="override stage-3 (end-to-end) epochs; 0 turns it off")
    t.add_argument("--train-limit", type=int, help="use only the first N training images (quick tries)")
    t.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="RUN_DIR",
        help="continue the interrupted run in RUN_DIR (or --out) from its last checkpoint, with its own saved settings",
    )
    t.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels only: the same seed on the same machine gives the same weights",
    )
    t.add_argument("--quiet", action="store_true", help="do not print the report at the end")

    e = sub.add_parser("evaluate", help="evaluate a model directory")
    e.add_argument("model_dir", metavar="MODEL", help="a model directory, or a pretrained name (`deepautodnn models`)")
    e.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    e.add_argument("--split", default="test", choices=["test", "val"], help="split to evaluate (default: test)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")

    p = sub.add_parser(
        "predict",
        help="classify image files (PNG, JPEG, ...), or a whole catalogue into one file with --out",
    )
    p.add_argument("model_dir", metavar="MODEL", help="a model directory, or a pretrained name (`deepautodnn models`)")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="SOURCE",
        help="image files and folders; with --out also a folder searched recursively, a glob "
        "('shop/**/*.jpg') or a manifest (.txt/.lst: a path per line; .csv: a path or file column)",
    )
    p.add_argument("--top-k", type=int, default=3, help="classes to list per image (default: 3)")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format (default: table)")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="catalogue mode: write every row to FILE (.parquet, .csv or .jsonl) as batches finish; "
        "rerunning the same command skips the files already in it",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="catalogue mode: processes decoding images (default: one per core; 0: none)",
    )
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="catalogue mode: local processes (default), or Ray Data on $RAY_ADDRESS or a local Ray",
    )
    p.add_argument("--batch-size", type=int, default=256, help="catalogue mode: images per model batch (default: 256)")
    p.add_argument("--no-progress", action="store_true", help="catalogue mode: no progress bar")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *BACKENDS],
        help="how to run the model; auto (default) takes the one `export` found fastest at equal "
        "accuracy, torch before any export",
    )

    s = sub.add_parser("serve", help="HTTP prediction service with a web page (FastAPI + uvicorn)")
    s.add_argument("model_dir", metavar="MODEL", help="a model directory, or a pretrained name (`deepautodnn models`)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    s.add_argument("--backend", default="auto", choices=["auto", *BACKENDS], help="as for predict (default: auto)")
    s.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' (default: $DEEPAUTODNN_TOKEN); "
        "required when binding to a non-loopback address",
    )
    s.add_argument("--max-body-mb", type=float, default=10, help="largest request body in MiB (default: 10)")
    s.add_argument(
        "--client-timeout",
        type=float,
        default=15,
        help="seconds a client may take to send a request's headers, and again its body; slower "
        "ones are cut off (default: 15)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own copy of the model (default: 1)",
    )
    s.add_argument(
        "--drain-seconds",
        type=float,
        default=30,
        help="on SIGTERM or Ctrl-C, stop accepting connections and give requests under way this long "
        "to finish before they are cut off (default: 30)",
    )
    s.add_argument(
        "--index",
        metavar="FILE",
        help="a catalogue index (`deepautodnn index build`) of this model's vectors: adds POST /v1/similar, "
        "and similar items on the page",
    )
    s.add_argument(
        "--access-log",
        default="text",
        choices=["text", "json", "off"],
        help="one line per request: uvicorn's text, a JSON object (time, method, path, status, "
        "duration_ms, client, images), or none (default: text); on stdout",
    )

    x = sub.add_parser("export", help="export a model directory to ONNX, checked against PyTorch")
    x.add_argument("model_dir")
    x.add_argument("--onnx", help="output file (default: MODEL_DIR/model.onnx, which --backend onnx uses)")
    x.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files (for the parity check)")
    x.add_argument("--parity-images", type=int, default=1000, help="test images for the parity check (default: 1000)")
    x.add_argument(
        "--calibration-images",
        type=int,
        default=1024,
        help="training images that set the int8 activation ranges (default: 1024)",
    )

    c = sub.add_parser("calibrate", help="fit unknown-input detection on a model's validation split")
    c.add_argument("model_dir")
    c.add_argument(
        "--false-alarm-rate",
        type=float,
        default=0.05,
        help="share of validation images that may be flagged unknown (default: 0.05)",
    )
    c.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")

    b = sub.add_parser("baselines", help="train and test the Table IV comparators on the same split")
    b.add_argument("--only", help="comma-separated comparators (default: all; see --list)")
    b.add_argument("--list", action="store_true", help="list the comparators and exit")
    b.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    b.add_argument(
        "--out", default="runs/baselines", help="folder for one JSON per comparator (default: runs/baselines)"
    )
    b.add_argument("--train-limit", type=int, help="use only the first N training images (quick tries)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    b.add_argument("--device", default="cpu", help="device for the torch comparators (default: cpu)")

    r = sub.add_parser("report", help="the paper's evaluation from a run (+ baselines, ablations) in one file")
    r.add_argument("run_dir")
    r.add_argument("--baselines", help="folder written by `deepautodnn baselines` (Table IV comparators)")
    r.add_argument("--ablations", help="folder written by `deepautodnn ablate`")
    r.add_argument(
        "--with-run",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="another finished run whose test accuracy the claims table also judges, e.g. a `paper` run (repeatable)",
    )
    r.add_argument("--format", default="both", choices=["md", "html", "both"], help="output format (default: both)")
    r.add_argument("--out", help="folder for paper_report.md / .html (default: RUN_DIR)")
    r.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    r.add_argument("--repeats", type=int, default=200, help="timed single-image passes (default: 200)")

    a = sub.add_parser("ablate", help="frozen vs fine-tuned vs no pretraining, across label budgets and seeds")
    a.add_argument("--preset", default="fast", choices=list(PRESETS), help="architecture and epochs (default: fast)")
    a.add_argument(
        "--variants",
        default=",".join(ABLATION_VARIANTS),
        help="comma-separated, from frozen,finetuned,scratch (default: all)",
    )
    a.add_argument("--labels", default="100,1000,10000,all", help="label budgets (default: 100,1000,10000,all)")
    a.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    a.add_argument(
        "--out", default="runs/ablation", help="folder for ablation.json and ablation.md (default: runs/ablation)"
    )
    a.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    a.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    a.add_argument("--train-limit", type=int, help="use only the first N training images (quick tries)")
    a.add_argument("--deadline-minutes", type=float, help="start no new row after this long; rerun to continue")

    k = sub.add_parser("bench", help="training and inference speed on this machine, against a naive reference")
    k.add_argument("--what", default="all", choices=["train", "infer", "all"], help="what to measure (default: all)")
    k.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")
    k.add_argument("--out", help="also write the JSON here")
    k.add_argument("--paper-model", help="trained `paper` model directory (default: random weights, no accuracy)")
    k.add_argument("--fast-model", help="trained `fast` model directory (default: random weights, no accuracy)")
    k.add_argument(
        "--time-to-accuracy",
        metavar="RUN_DIR",
        help="also train `fast` (seed 0) into RUN_DIR and time it; about 10 minutes on 2 CPU cores",
    )
    k.add_argument("--train-images", type=int, default=4096, help="images per timed training epoch (default: 4096)")
    k.add_argument("--seconds", type=float, default=2.0, help="timing budget per backend and batch size (default: 2)")
    k.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024], help="batch sizes (default: 1 64 1024)")
    k.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")

    q = sub.add_parser("preprocess", help="show how an image becomes the model's input: each step and the evidence")
    q.add_argument("image")
    q.add_argument("--size", type=int, default=28, help="side of the model input in pixels (default: 28)")
    q.add_argument("--steps", metavar="PNG", help="write every step as a row of titled panels to this PNG")
    q.add_argument("--out", metavar="PNG", help="write the model input (8-bit grey) to this PNG")

    add_search_parsers(sub)

    m = sub.add_parser("models", help="the pretrained models that ship with deepautodnn, by name")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.add_argument("--path", metavar="NAME", help="print only the folder of pretrained model NAME")

    i = sub.add_parser("info", help="versions, device and where the dataset is")
    i.add_argument("--data-dir", help="also look in this folder for the dataset")
    return parser


def add_search_parsers(sub) -> None:
    """`embed`, `index build|info` and `similar`: similar-item search (docs/search.md)."""
    from deepautodnn.config import EMBEDDING_SPACES
    from deepautodnn.inference.names import DEFAULT_SPACE, EXACT_BELOW, INDEX_KINDS, TARGET_RECALL

    e = sub.add_parser("embed", help="a search vector for every image of a catalogue, into one Parquet file")
    e.add_argument("model_dir", metavar="MODEL", help="a model directory, or a pretrained name (`deepautodnn models`)")
    e.add_argument("inputs", nargs="+", metavar="SOURCE", help="folders, globs and manifests, as for predict --out")
    e.add_argument("--out", required=True, metavar="FILE", help="the vectors (.parquet); a rerun skips files in it")
    e.add_argument(
        "--space",
        default=DEFAULT_SPACE,
        choices=list(EMBEDDING_SPACES),
        help=f"the classifier's penultimate features or the autoencoder's code (default: {DEFAULT_SPACE}, "
        "the better in the retrieval benchmark)",
    )
    e.add_argument("--workers", type=int, help="processes decoding images (default: one per core; 0: none)")
    e.add_argument("--batch-size", type=int, default=256, help="images per model batch (default: 256)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")

    x = sub.add_parser("index", help="a FAISS index over the vectors of `embed`, for `similar` and `serve --index`")
    xs = x.add_subparsers(dest="index_command", required=True)
    b = xs.add_parser("build", help="build the index: exact for small catalogues, IVF with a measured nprobe above")
    b.add_argument("vectors", help="the Parquet file `deepautodnn embed` wrote")
    b.add_argument("--out", required=True, metavar="INDEX", help="the index file to write, e.g. catalogue.index")
    b.add_argument(
        "--kind",
        default="auto",
        choices=list(INDEX_KINDS),
        help=f"auto (default): exact below {EXACT_BELOW:,} vectors, else ivf",
    )
    b.add_argument(
        "--recall",
        type=float,
        default=TARGET_RECALL,
        help=f"ivf: recall@10 against exact search to reach (default: {TARGET_RECALL})",
    )
    i = xs.add_parser("info", help="what an index holds: its model, space, kind, size and measured trade-off")
    i.add_argument("index")
    i.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("similar", help="the catalogue items that look most like a photo")
    s.add_argument("model_dir", metavar="MODEL", help="the model that embedded the catalogue (directory or name)")
    s.add_argument("index", help="the index file of `deepautodnn index build`")
    s.add_argument("queries", nargs="+", metavar="QUERY", help="image files or folders")
    s.add_argument("--k", type=int, default=10, help="neighbours per query (default: 10)")
    s.add_argument("--same-class", action="store_true", help="only items the model gives the query's class")
    s.add_argument(
        "--even-if-unknown",
        action="store_true",
        help="search for queries flagged unknown too (by default they get the flag, not neighbours)",
    )
    s.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format (default: table)")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolved_preset(name: str, device: str, quiet: bool = False) -> Config:
    """The preset `name` as `device` trains it (see `config.resolve_preset`), saying so when it differs."""
    from deepautodnn.utils.runtime import bf16_supported, select_device

    dev = select_device(device)
    cfg = resolve_preset(name, bf16=bf16_supported(dev))
    if cfg.preset != name and not quiet:
        _stderr(f"preset {name}: this {dev.type.upper()} has no bf16, so it trains {cfg.preset}, its float32 recipe")
    return cfg


def cmd_train(args) -> int:
    import os

    from deepautodnn.training.run import train_run

    if args.resume:  # the run goes on with the config saved in it; the preset is not read
        cfg = get_preset(args.preset)
    else:  # under torchrun, rank 0 alone says which preset the device trains
        cfg = resolved_preset(args.preset, args.device, quiet=os.environ.get("RANK", "0") != "0")
    for name in ("ae_epochs", "dnn_epochs", "finetune_epochs"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
            setattr(cfg.train, name, value)
    if args.train_limit is not None and args.train_limit < 20:
        raise ValueError("--train-limit must be at least 20 images")
    if isinstance(args.resume, str):
        if args.out and Path(args.out) != Path(args.resume):
            raise ValueError(f"--resume {args.resume} and --out {args.out} name different runs; give one")
        args.out = args.resume
    out = args.out or f"runs/{args.preset}-seed{args.seed}"
    metrics = train_run(
        cfg,
        out,
        seed=args.seed,
        data_dir=args.data_dir,
        device=args.device,
        train_limit=args.train_limit,
        resume=bool(args.resume),
        data=args.data,
        deterministic=args.deterministic,
    )
    if not metrics:  # a torchrun rank other than 0: rank 0 reports
        return 0
    if not args.quiet:
        print(Path(out, "report.md").read_text())
    print(f"test accuracy {metrics['accuracy'] * 100:.2f}%  ->  {out}", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from deepautodnn.inference.evaluate import evaluate_model, metrics_markdown
    from deepautodnn.models.serialization import load_model
    from deepautodnn.training.run import load_model_run_data

    model = load_model(args.model_dir)
    data = load_model_run_data(args.model_dir, args.data_dir)  # the images and splits it trained on
    if args.split == "test":
        images, labels = data.test_images, data.test_labels
    else:
        images, labels = data.images[data.val_idx], data.labels[data.val_idx]
    metrics = {"split": args.split, **evaluate_model(model, images, labels)}
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(metrics_markdown(metrics, title=f"Evaluation on the {args.split} split"))
    return 0


def cmd_predict(args) -> int:
    if args.out:
        return predict_catalogue(args)
    if args.workers is not None or args.engine != "local":
        raise ValueError("--workers and --engine go with --out (catalogue mode)")
    from deepautodnn.inference.ood import UNKNOWN_FILE, UnknownDetector
    from deepautodnn.inference.predict import predict_files
    from deepautodnn.models.serialization import load_model

    if args.top_k < 1:
        raise ValueError("--top-k must be >= 1")
    from deepautodnn.inference.backends import make_backend

    model = load_model(args.model_dir)
    backend = make_backend(args.model_dir, args.backend, echo=_stderr)
    detector = UnknownDetector.load(args.model_dir)
    if detector is None:
        print(
            f"deepautodnn: {args.model_dir} has no {UNKNOWN_FILE}; unknown-input detection is off "
            f"(run `deepautodnn calibrate {args.model_dir}`)",
            file=sys.stderr,
        )
    elif detector.calibration_for(backend.name)[0] != backend.name:
        print(
            f"deepautodnn: unknown-input detection was not calibrated for the {backend.name} backend; using "
            f"torch's thresholds (run `deepautodnn calibrate {args.model_dir}` to fit its own)",
            file=sys.stderr,
        )
    report = predict_files(model, args.inputs, top_k=args.top_k, detector=detector, backend=backend)
    for err in report.errors:
        print(f"deepautodnn: skipped {err['error']}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(report.predictions, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "label", "label_index", "probability", "unknown", "unknown_score", "top_k"])
        for p in report.predictions:
            top = ";".join(f"{t['label']}:{t['probability']:.4f}" for t in p["top_k"])
            score = "" if p["unknown_score"] is None else f"{p['unknown_score']:.4f}"
            unknown = "" if p["unknown"] is None else str(p["unknown"]).lower()
            writer.writerow([p["file"], p["label"], p["label_index"], f"{p['probability']:.6f}", unknown, score, top])
    else:
        for p in report.predictions:
            top = ", ".join(f"{t['label']} {t['probability'] * 100:.1f}%" for t in p["top_k"])
            flag = f"\tUNKNOWN (score {p['unknown_score']:.2f})" if p["unknown"] else ""
            print(f"{p['file']}\t{p['label']}\t({top}){flag}")
    if not report.predictions and not report.errors:
        print("deepautodnn: no image files found in the given inputs", file=sys.stderr)
        return 1
    return 1 if report.errors else 0


def predict_catalogue(args) -> int:
    """`predict --out`: every image the sources name, one row each, into one file."""
    kwargs = dict(top_k=args.top_k, batch_size=args.batch_size, backend=args.backend, progress=not args.no_progress)
    if args.engine == "ray":
        from deepautodnn.inference.ray_engine import classify_catalogue_ray as classify

        kwargs["cpus"] = args.workers
    else:
        from deepautodnn.inference.catalogue import classify_catalogue as classify

        kwargs["workers"] = args.workers
    # as typed: a pretrained name stays a name, which Ray's nodes resolve to their own copy
    return catalogue_command(
        lambda: classify(args.model_given, args.inputs, args.out, echo=_stderr, **kwargs), args.out
    )


def cmd_embed(args) -> int:
    from deepautodnn.inference.embedding import embed_catalogue

    def run():
        return embed_catalogue(
            args.model_dir,
            args.inputs,
            args.out,
            space=args.space,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=not args.no_progress,
        )

    return catalogue_command(run, args.out)


def catalogue_command(run, out: str) -> int:
    """`predict --out` and `embed`: run, then the summary line; Ctrl-C keeps the rows written."""
    try:
        summary = run()
    except KeyboardInterrupt:
        _stderr(f"deepautodnn: interrupted; the rows written so far are in {out} (rerun to continue)")
        return 130
    _stderr(f"deepautodnn: {summary.line()}")
    return 1 if summary.errors else 0  # as for single files: every row is written, but some are errors


def cmd_index(args) -> int:
    from deepautodnn.inference.vector_index import CatalogueIndex, build_catalogue_index

    if args.index_command == "build":
        built = build_catalogue_index(args.vectors, args.out, kind=args.kind, target_recall=args.recall)
        _stderr(f"deepautodnn: {index_summary(built.meta)} -> {args.out}")
        return 0
    meta = CatalogueIndex.load(args.index).meta
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    print(index_summary(meta))
    for point in meta["tradeoff"]:
        mark = "  <- chosen" if point["nprobe"] == meta["params"].get("nprobe") else ""
        print(
            f"  nprobe {point['nprobe']:>5}  recall@10 {point['recall_at_10']:.3f}  {point['ms_per_query']:.3f} ms{mark}"
        )
    return 0


def index_summary(meta: dict) -> str:
    identity = meta["identity"]
    how = "exact" if meta["kind"] == "exact" else "ivf, " + ", ".join(f"{k} {v}" for k, v in meta["params"].items())
    return (
        f"{meta['count']} items, {identity['space']} vectors ({identity['dim']} wide) of model "
        f"{identity['weights_sha256'][:12]}; {how}"
    )


def cmd_similar(args) -> int:
    from deepautodnn.inference.similar import SimilarFinder

    finder = SimilarFinder(args.model_dir, args.index)
    results, errors = finder.similar_files(
        args.queries, k=args.k, same_class=args.same_class, even_if_unknown=args.even_if_unknown
    )
    for err in errors:
        _stderr(f"deepautodnn: skipped {err['error']}")
    if args.format == "json":
        print(json.dumps(results, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(
            ["query", "query_label", "query_unknown", "rank", "file", "score", "label", "label_index", "note"]
        )
        for r in results:
            q = r["query"]
            head = [q["file"], q["label"], "" if q["unknown"] is None else str(q["unknown"]).lower()]
            for rank, n in enumerate(r["neighbours"], 1):
                writer.writerow([*head, rank, n["file"], f"{n['score']:.6f}", n["label"], n["label_index"], ""])
            if not r["neighbours"]:  # every query has a row: one without neighbours says why
                writer.writerow([*head, "", "", "", "", "", r["note"] or "no item matched"])
    else:
        for r in results:
            q = r["query"]
            print(f"{q['file']}\t{q['label']} ({q['probability'] * 100:.1f}%)" + ("\tUNKNOWN" if q["unknown"] else ""))
            for rank, n in enumerate(r["neighbours"], 1):
                print(f"  {rank:>3}  {n['score']:.4f}  {n['label']:<12}  {n['file']}")
    for r in results:
        if r["note"]:
            _stderr(f"deepautodnn: {r['query']['file']}: {r['note']} (--even-if-unknown shows them)")
    if not results and not errors:
        _stderr("deepautodnn: no image files found in the given queries")
        return 1
    return 1 if errors else 0


def cmd_models(args) -> int:
    from deepautodnn.models.pretrained import pretrained_dir, pretrained_models

    if args.path:
        print(pretrained_dir(args.path))
        return 0
    rows = pretrained_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        acc = "not installed" if not r["installed"] else f"test accuracy {r['test_accuracy'] * 100:.2f}%"
        print(f"{r['name']:16} {acc:24} {r['description']}")
    return 0


def cmd_serve(args) -> int:
    import os
    import signal
    import tempfile

    from deepautodnn.serve.app import (  # says so if [serve] is missing
        MULTIPROCESS_VARIABLE,
        SETTINGS_VARIABLE,
        create_app,
        is_loopback,
        slow_client_protocol,
        use_serving_threads,
    )

    token = args.token or os.environ.get("DEEPAUTODNN_TOKEN") or None
    if not is_loopback(args.host) and not token:
        raise ValueError(
            f"binding to {args.host} exposes the service beyond this machine; set --token or DEEPAUTODNN_TOKEN"
        )
    if args.max_body_mb <= 0 or args.client_timeout <= 0:
        raise ValueError("--max-body-mb and --client-timeout must be > 0")
    if args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if args.drain_seconds < 0:
        raise ValueError("--drain-seconds must be >= 0")
    from deepautodnn.models.serialization import load_config

    load_config(args.model_dir)  # fail now, with a clear message, if the directory is not a model
    from deepautodnn.inference.backends import make_backend

    use_serving_threads(args.workers, index=bool(args.index))  # before any backend takes its thread count

    # Also fails now for a missing or broken ONNX file. "auto" is resolved here, once, and every
    # worker serves what it chose: timed in several processes at once, they could choose apart.
    backend = make_backend(args.model_dir, args.backend, echo=_stderr).name
    if args.index:  # fails now for a missing or damaged index, or one of another model's vectors
        from deepautodnn.inference.similar import SimilarFinder

        _stderr(
            f"deepautodnn: similar items from {index_summary(SimilarFinder(args.model_dir, args.index).index.meta)}"
        )
    settings = {
        "model_dir": str(args.model_dir),
        "backend": backend,
        "token": token,
        "max_body_bytes": int(args.max_body_mb * 2**20),
        "client_timeout_s": args.client_timeout,
        "json_access_log": args.access_log == "json",
        "index": str(Path(args.index).resolve()) if args.index else None,
    }
    import uvicorn

    server = {
        "host": args.host,
        "port": args.port,
        "log_level": "info",
        "http": slow_client_protocol(args.client_timeout),
        "access_log": args.access_log == "text",  # uvicorn's own; the JSON one is the app's
        "timeout_graceful_shutdown": args.drain_seconds,
    }

    class Terminated(Exception):
        pass

    def terminated(signum, frame):
        raise Terminated

    # uvicorn drains on SIGTERM, then raises the signal again for whoever embeds it: by default that
    # would kill this process (exit 143) after a clean stop. Here it ends the command with 0 instead.
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        if args.workers == 1:
            uvicorn.run(create_app(**settings), **server)
            return 0
        # Several processes need the app by its import path; each builds it from the settings it
        # inherits (the token among them: the workers' environment is as private as this process's).
        # Their metrics are summed through files in a fresh folder (see serve.telemetry).
        os.environ[SETTINGS_VARIABLE] = json.dumps({**settings, "workers": args.workers})
        with tempfile.TemporaryDirectory(prefix="deepautodnn-metrics-") as metrics_dir:
            os.environ[MULTIPROCESS_VARIABLE] = metrics_dir
            uvicorn.run("deepautodnn.serve.app:app_from_environment", factory=True, workers=args.workers, **server)
        return 0
    except (Terminated, KeyboardInterrupt):  # a clean stop: the drain is done, or the server had not started
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_export(args) -> int:
    import numpy as np

    from deepautodnn.data.fashion_mnist import DataError
    from deepautodnn.inference.export import export_onnx, onnx_parity, quantize_int8, select_backend
    from deepautodnn.inference.ood import UNKNOWN_FILE, UnknownDetector
    from deepautodnn.models.serialization import load_config
    from deepautodnn.training.run import load_model_run_data

    if args.parity_images < 1 or args.calibration_images < 1:
        raise ValueError("--parity-images and --calibration-images must be >= 1")
    path = export_onnx(args.model_dir, args.onnx)
    try:
        run_data = load_model_run_data(args.model_dir, args.data_dir)
        images = run_data.test_images[: args.parity_images]
    except DataError as err:  # the training data is not here: check on random images instead
        print(f"deepautodnn: parity on random images, no int8 file and no backend choice ({err})", file=sys.stderr)
        run_data = None
        size = load_config(args.model_dir).model.image_size
        images = np.random.default_rng(0).integers(0, 256, (args.parity_images, size, size), dtype=np.uint8)
    parity = onnx_parity(args.model_dir, path, images)
    out = {"onnx": str(path), **parity}
    if parity["argmax_agreement"] < 1.0 or parity["max_abs_diff_probabilities"] >= 1e-4:
        print(json.dumps(out, indent=2))
        print("deepautodnn: the ONNX file does not match PyTorch closely enough", file=sys.stderr)
        return 1
    if run_data is not None and args.onnx is None:
        # int8 ranges come from training images; the keep-or-drop choice from validation images.
        calibration = run_data.images[run_data.train_idx[: args.calibration_images]]
        out["onnx_int8"] = str(quantize_int8(path, Path(args.model_dir) / INT8_ONNX_FILE, calibration))
        record = select_backend(args.model_dir, run_data.images[run_data.val_idx], run_data.labels[run_data.val_idx])
        out["backend"] = {"chosen": record["chosen"], "backends": record["backends"]}
        if (Path(args.model_dir) / UNKNOWN_FILE).exists():  # the new files get thresholds of their own
            from deepautodnn.training.run import calibrate_model_dir

            det = calibrate_model_dir(
                args.model_dir,
                data_dir=args.data_dir,
                false_alarm_rate=UnknownDetector.load(args.model_dir).false_alarm_rate,
                echo=_stderr,
            )
            out["unknown_calibrated_for"] = sorted(det.backends)
    print(json.dumps(out, indent=2))
    return 0


def cmd_calibrate(args) -> int:
    from deepautodnn.inference.ood import UNKNOWN_FILE
    from deepautodnn.training.run import calibrate_model_dir

    if not 0 < args.false_alarm_rate < 1:
        raise ValueError(f"--false-alarm-rate must be between 0 and 1, got {args.false_alarm_rate}")

    det = calibrate_model_dir(
        args.model_dir, data_dir=args.data_dir, false_alarm_rate=args.false_alarm_rate, echo=_stderr
    )
    for name, cal in det.backends.items():
        rates = ", ".join(
            f"{rate * 100:.1f}% of the {subset}" for subset, rate in cal.validation_false_alarm_rate.items()
        )
        print(
            f"{name}: threshold {cal.threshold:.3f} on the fused score; flags {rates} "
            f"({cal.n_calibration} validation images and photos of them)"
        )
    print(f"-> {Path(args.model_dir) / UNKNOWN_FILE}")
    return 0


def cmd_baselines(args) -> int:
    from deepautodnn.experiments.baselines import COMPARATORS, parse_only, run_baselines

    if args.list:
        for comp in COMPARATORS.values():
            print(f"{comp.name:16} {comp.title:30} {comp.paper_row or '(classic pixel baseline)'}")
        return 0
    names = parse_only(args.only)
    if args.train_limit is not None and args.train_limit < 100:
        raise ValueError("--train-limit must be at least 100 images")
    results = run_baselines(
        args.out,
        names,
        data_dir=args.data_dir,
        train_limit=args.train_limit,
        seed=args.seed,
        device=args.device,
        echo=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print("| comparator | test accuracy | paper | train s | predict s |")
    print("|---|---:|---:|---:|---:|")
    for r in results.values():
        paper = f"{r['paper_accuracy'] * 100:.2f}%" if r["paper_accuracy"] is not None else "—"
        print(
            f"| {r['title']} | {r['accuracy'] * 100:.2f}% | {paper} | {r['train_seconds']:.1f} | "
            f"{r['predict_seconds']:.1f} |"
        )
    print(f"results -> {args.out}", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from deepautodnn.experiments.report import write_paper_report

    if args.repeats < 1:
        raise ValueError("--repeats must be >= 1")
    formats = ("md", "html") if args.format == "both" else (args.format,)
    paths = write_paper_report(
        args.run_dir,
        args.out,
        formats,
        baselines_dir=args.baselines,
        ablation_dir=args.ablations,
        with_runs=args.with_run,
        data_dir=args.data_dir,
        timing_repeats=args.repeats,
    )
    for path in paths:
        print(path)
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"{flag} takes comma-separated whole numbers, got {text!r}")
    return values


def cmd_ablate(args) -> int:
    from deepautodnn.experiments.ablation import VARIANTS, parse_labels, run_ablation

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"--variants: choose from {', '.join(VARIANTS)}")
    seeds = _int_list(args.seeds, "--seeds")
    if args.train_limit is not None and args.train_limit < 200:
        raise ValueError("--train-limit must be at least 200 images")
    deadline = args.deadline_minutes * 60 if args.deadline_minutes else None
    state = run_ablation(
        resolved_preset(args.preset, args.device),
        args.out,
        seeds=seeds,
        variants=variants,
        label_budgets=parse_labels(args.labels),
        data_dir=args.data_dir,
        device=args.device,
        train_limit=args.train_limit,
        deadline_seconds=deadline,
        echo=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(Path(args.out, "ablation.md").read_text())
    print(f"{len(state['rows'])} rows -> {args.out}", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from deepautodnn.experiments.bench import bench_markdown, run_bench
    from deepautodnn.utils.files import atomic_write_json

    if args.train_images < 64 or args.seconds <= 0 or min(args.batches) < 1:
        raise ValueError("--train-images must be >= 64, --seconds > 0 and every batch size >= 1")
    result = run_bench(
        args.what,
        data_dir=args.data_dir,
        models={"paper": args.paper_model, "fast": args.fast_model},
        train_images=args.train_images,
        time_to_accuracy_dir=args.time_to_accuracy,
        seconds_per_batch=args.seconds,
        batches=tuple(args.batches),
    )
    result["command"] = "deepautodnn " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("deepautodnn") else None
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2) if args.json else bench_markdown(result))
    return 0


def cmd_preprocess(args) -> int:
    from deepautodnn.data.preprocess import load_preprocessed, save_steps_figure

    if not 8 <= args.size <= 1024:
        raise ValueError("--size must be between 8 and 1024")
    prepared = load_preprocessed(args.image, args.size)
    if args.steps:
        save_steps_figure([(Path(args.image).name, prepared.steps)], args.steps)
    if args.out:
        from PIL import Image

        Image.fromarray(prepared.image).save(args.out, format="PNG")
    print(
        json.dumps(
            {
                "image": args.image,
                "size": args.size,
                "evidence": prepared.evidence,
                "steps": [name for name, _ in prepared.steps],
                "steps_png": args.steps,
                "out": args.out,
            },
            indent=2,
        )
    )
    return 0


def cmd_info(args) -> int:
    import numpy

    from deepautodnn.data.fashion_mnist import find_fashion_mnist
    from deepautodnn.utils.runtime import machine_info

    found = find_fashion_mnist(args.data_dir)
    machine = machine_info()
    info = {
        "deepautodnn": __version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        **machine,
        "default_device": "cuda" if machine["cuda"] else "cpu",
        "dataset": str(found) if found else "not found (apt-get install dataset-fashion-mnist, or --data-dir DIR)",
    }
    for k, v in info.items():
        print(f"{k:16} {v}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "export": cmd_export,
    "calibrate": cmd_calibrate,
    "baselines": cmd_baselines,
    "report": cmd_report,
    "ablate": cmd_ablate,
    "bench": cmd_bench,
    "preprocess": cmd_preprocess,
    "models": cmd_models,
    "embed": cmd_embed,
    "index": cmd_index,
    "similar": cmd_similar,
    "info": cmd_info,
}

WRITES_MODEL_DIR = {"export", "calibrate"}  # commands that write into the model directory


def resolve_model_arg(args) -> None:
    """A pretrained name in MODEL becomes its shipped folder; commands that would write into it
    are refused rather than changing the installed package."""
    from deepautodnn.models.pretrained import is_pretrained_name, resolve_model_dir

    resolved = resolve_model_dir(args.model_dir)
    if args.command in WRITES_MODEL_DIR and is_pretrained_name(args.model_dir) and str(resolved) != args.model_dir:
        raise ValueError(
            f"{args.model_dir} is a pretrained model shipped with deepautodnn; `{args.command}` writes into its "
            f'folder, so copy it first: cp -r "$(deepautodnn models --path {args.model_dir})" my-model'
        )
    args.model_given = args.model_dir  # the name as typed: Ray's nodes resolve it themselves
    args.model_dir = str(resolved)


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from deepautodnn.errors import DeepAutoDNNError, TrainingInterrupted

    try:
        if getattr(args, "model_dir", None):
            resolve_model_arg(args)
        return COMMANDS[args.command](args)
    except TrainingInterrupted as err:
        print(f"deepautodnn: {err}", file=sys.stderr)
        return 130
    except (DeepAutoDNNError, ValueError, FloatingPointError) as err:
        print(f"deepautodnn: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk or a missing permission outside our own writers; names the file
        print(f"deepautodnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        how = "rerun the same command" if args.command == "ablate" else "continue with --resume"
        print(f"deepautodnn: interrupted; finished work is kept ({how})", file=sys.stderr)
        return 130
