"""Markdown tables rendered from the files in results/, for the README and docs/.

A page never types a figure: `scripts/render_readme_tables.py` replaces each generated block with
what a renderer here makes from the file the block names. The headline table and the claims table
read one manifest, `results/headline.json`, which lists the files that stand for each result; the
claims are judged by `experiments.claims.judge_claims`, the same function as the report's.
"""

from __future__ import annotations

from pathlib import Path

from deepautodnn import paper
from deepautodnn.experiments.claims import (
    Evidence,
    Latency,
    PresetAccuracy,
    accuracy_of_run,
    accuracy_of_seeds,
    claims_rows,
)
from deepautodnn.experiments.markdown import Table, render_markdown
from deepautodnn.utils.files import read_json
from deepautodnn.utils.runtime import recorded_cpu_class


def _link(path: str, text: str | None = None) -> str:
    return f"[{text or Path(path).name}]({path})"


def _comparators(root: Path, folder: str | None) -> dict[str, dict]:
    if not folder:
        return {}
    from deepautodnn.experiments.baselines import load_results

    return load_results(root / folder)


def _latencies(root: Path, entries: list[dict]) -> list[Latency]:
    """One `Latency` per manifest entry: a `bench --what infer` file, an architecture, a graph and a
    backend (`auto` takes the one the file says `auto` chose)."""
    out = []
    for e in entries:
        r = read_json(root / e["file"])
        arch = r["inference"]["architectures"][e["architecture"]]
        backend = arch["auto"]["backend"] if e["backend"] == "auto" else e["backend"]
        p50_ms = arch["graphs"][e["graph"]]["backends"][backend]["speed"]["1"]["p50_ms"]
        how = f"{backend}{' (auto)' if e['backend'] == 'auto' else ''}, CPU {r['machine']['cpu_class']}"
        out.append(Latency(e["architecture"], p50_ms / 1e3, how))
    return out


def _accuracies(manifest: dict, root: Path) -> list[PresetAccuracy]:
    """Each preset's test accuracy, from the manifest's seed files, then its run directories."""
    seeds = [accuracy_of_seeds(root / f) for f in manifest.get("seed_files", [])]
    return seeds + [accuracy_of_run(root / d) for d in manifest.get("run_dirs", [])]


def evidence(manifest: dict, root: Path) -> Evidence:
    """What the README's verdicts read, from the files the manifest names."""
    ablation = read_json(root / manifest["ablation"] / "ablation.json") if manifest.get("ablation") else {}
    per_class = read_json(root / manifest["per_class_run"] / "metrics.json") if manifest.get("per_class_run") else {}
    return Evidence(
        accuracy=_accuracies(manifest, root),
        comparators=_comparators(root, manifest.get("comparators")),
        latency=_latencies(root, manifest.get("latency", [])),
        ablation_summary=ablation.get("summary", []),
        per_class_f1={name: m["f1"] for name, m in per_class.get("per_class", {}).items()},
        per_class_source=f"`{per_class.get('preset')}` seed {per_class.get('seed')}" if per_class else "",
    )


def claims_markdown(manifest: dict, root: Path) -> str:
    header, rows = claims_rows(evidence(manifest, root))
    return render_markdown([Table(header, rows)]).strip() + "\n"


def headline_markdown(manifest: dict, root: Path) -> str:
    """Our presets' test accuracy and training time, and the best rebuilt comparator, each linked
    to its file."""
    rows = []
    for f in manifest.get("seed_files", []):
        r = read_json(root / f)
        a = accuracy_of_seeds(root / f)
        seeds = ", ".join(f"{x * 100:.2f}" for x in a.accuracies)
        rows.append(
            [
                f"`{a.preset}`",
                f"**{a.mean * 100:.2f}%** ± {_std(a)} ({seeds})",
                f"{r['wall_seconds_mean'] / 60:.1f} min per run",
                a.where,
                _link(f),
            ]
        )
    for d in manifest.get("run_dirs", []):
        m = read_json(root / d / "metrics.json")
        a = accuracy_of_run(root / d)
        rows.append(
            [
                f"`{a.preset}`",
                f"**{a.mean * 100:.2f}%** (seed {m.get('seed')})",
                f"{m.get('train_seconds', 0) / 60:.1f} min",
                a.where,
                _link(f"{d}/metrics.json", f"{Path(d).name}/"),
            ]
        )
    rebuilt = [r for r in _comparators(root, manifest.get("comparators")).values() if r.get("paper_row")]
    if rebuilt:
        top = max(rebuilt, key=lambda r: r["accuracy"])
        rows.append(
            [
                f"best rebuilt Table IV method: `{top['name']}` ({top['paper_row']})",
                f"{top['accuracy'] * 100:.2f}% (seed {top.get('seed', 0)})",
                f"{top['train_seconds'] / 60:.1f} min",
                "CPU",
                _link(f"{manifest['comparators']}/{top['name']}.json"),
            ]
        )
    rows.append(["the paper (Table IV)", f"{paper.TEST_ACCURACY * 100:.2f}%", "", "", ""])
    table = Table(["preset", "test accuracy", "time", "trained on", "file"], rows)
    return render_markdown([table]).strip() + "\n"


def _std(a: PresetAccuracy) -> str:
    return "-" if a.std is None else f"{a.std * 100:.2f}"


def table_iv_markdown(manifest: dict, root: Path) -> str:
    """The paper's Table IV beside our rebuilt comparators and presets."""
    comparators = _comparators(root, manifest.get("comparators"))
    by_row = {r["paper_row"]: r for r in comparators.values() if r.get("paper_row")}
    rows = []
    for name, paper_acc in paper.TABLE_IV.items():
        if name == "DeepAutoNN-ours":
            for a in _accuracies(manifest, root):
                rows.append([f"DeepAutoNN, `{a.preset}` ({a.where})", f"{paper_acc * 100:.2f}%", _acc(a), "", ""])
        elif name in by_row:
            r = by_row[name]
            rows.append([name, f"{paper_acc * 100:.2f}%", f"{r['accuracy'] * 100:.2f}%", f"`{r['name']}`", _secs(r)])
        else:
            rows.append([name, f"{paper_acc * 100:.2f}%", "not rebuilt", "", ""])
    for r in comparators.values():
        if not r.get("paper_row"):
            rows.append([f"classic: {r['title']}", "", f"{r['accuracy'] * 100:.2f}%", f"`{r['name']}`", _secs(r)])
    table = Table(["Table IV row", "paper", "ours", "our comparator", "train s"], rows)
    return render_markdown([table]).strip() + "\n"


def _acc(a: PresetAccuracy) -> str:
    n = len(a.accuracies)
    return f"{a.mean * 100:.2f}%" + (f" ± {_std(a)} ({n} seeds)" if n > 1 else "")


def _secs(r: dict) -> str:
    return f"{r['train_seconds']:.0f}"


def ablation_markdown(state: dict) -> str:
    """An `ablate` folder's table, with where, when and from which commit it ran."""
    from deepautodnn.experiments.ablation import ablation_table

    machine = state.get("machine") or {}
    where = machine.get("cuda") or f"CPU {machine.get('cpu_class', machine.get('cpu', '?'))}"
    prov = state.get("provenance") or state  # nested in files written before it was flattened
    origin = f"commit `{prov['commit']}`, `{prov['command']}`" if prov.get("commit") else "commit not recorded"
    train = state["config"]["train"]
    recipe = (
        f"{train['ae_epochs']} autoencoder, {train['dnn_epochs']} DNN and {train['finetune_epochs']} "
        f"fine-tuning epochs, DNN dropout {state['config']['model']['dnn_dropout']}"
    )
    text = render_markdown([Table(*ablation_table(state))]).strip()
    return f"{text}\n\nPreset `{state['preset']}` ({recipe}); {where}; {origin}.\n"


def bench_markdown_section(result: dict) -> str:
    """A `deepautodnn bench` file's own summary, its headings demoted to sit inside a page, with
    the command and commit that made it."""
    from deepautodnn.experiments.bench import bench_markdown

    lines = bench_markdown(result).strip().splitlines()[1:]  # the first line is the summary's title
    body = "\n".join(f"##{line}" if line.startswith("## ") else line for line in lines).strip()
    commit = result.get("commit") or "not recorded"
    return f"{body}\n\n`{result.get('command', 'command not recorded')}`, commit {commit}, CPU {result['machine'].get('cpu_class', 'class not recorded')}.\n"


def serve_load_markdown(manifest: dict, root: Path) -> str:
    """`benchmarks/serve_load.py` files, one row per backend, each linked to its file."""
    rows = []
    for name in manifest["files"]:
        r = read_json(root / name)
        used = r.get("backend_used", r["backend"])
        backend = f"`{r['backend']}`" + (f" (ran `{used}`)" if used != r["backend"] else "")
        lat = r["latency_ms"]
        rows.append(
            [
                f"{backend} [json]({name})",
                f"{r['requests_per_second']:,.0f}",
                *(f"{lat[p]:.0f} ms" for p in ("p50", "p95", "p99")),
                str(r["errors"]),
                str(r["wrong_answers"]),
                f"{r['server_peak_rss_mib']:.0f} MiB",
            ]
        )
    header = ["backend", "requests/s", "p50", "p95", "p99", "errors", "wrong answers", "server peak RSS"]
    return render_markdown([Table(header, rows)]).strip() + "\n"


def reliability_markdown(manifest: dict, root: Path) -> str:
    """The reliability summary: kills survived, the cost of a checkpoint, fuzz cases, the soak."""
    kills = read_json(root / manifest["kill_resume"])
    fuzz = read_json(root / manifest["fuzz"])
    soak = read_json(root / manifest["soak"])
    saves = ", ".join(
        f"`{s['preset']}` {s['bytes'] / 1e6:.0f} MB in {s['seconds_median']:.2f} s" for s in kills["state_save"]
    )
    outcomes = sorted({kind for t in fuzz["targets"] for kind in t["outcomes"]} - {"accepted"})
    rss = soak["server_rss_mib"]
    rows = [
        [
            "kill -9 a training run at random moments and mid-save, Ctrl-C once; resume each time",
            f"`{kills['command']}`",
            f"**{kills['survived']} of {kills['interruptions']} survived**; final weights' SHA-256 "
            + ("**identical**" if kills["weights_identical_to_uninterrupted"] else "**different**")
            + " to an uninterrupted run",
        ],
        ["cost of the per-epoch checkpoint (median save)", "(the same)", saves],
        [
            f"fuzz every input reader ({', '.join(t['target'] for t in fuzz['targets'])})",
            f"`{fuzz['command']}`",
            f"**{fuzz['total_cases']:,} cases**, "
            + ("all" if fuzz["all_passed"] else "**not all**")
            + f" ended accepted or in deepautodnn's own errors ({', '.join(outcomes)})",
        ],
        [
            f"soak: {soak['requests']:,} valid/invalid/oversized requests, {soak['clients']} clients, "
            f"{soak['slow_clients']} slowloris clients",
            f"`{soak['command']}`",
            f"**{soak['server_errors_5xx']} 5xx**, {soak['wrong_answers']} wrong answers, RSS "
            f"**{rss['growth_percent']:+.1f}%**, server alive after: {'yes' if soak['server_alive_after'] else 'no'}",
        ],
    ]
    return render_markdown([Table(["what", "command", "result"], rows)]).strip() + "\n"


def pretrained_markdown(result: dict) -> str:
    """`scripts/make_pretrained.py`'s record: what ships as the pretrained model, and its figures."""
    weights = {name: f for name, f in result["files"].items() if name.endswith(".safetensors")}
    files = ", ".join(f"`{name}` {f['bytes'] / 1e6:.2f} MB" for name, f in weights.items()) + ", JSON and checksums"
    rows = [
        ["made by", f"`{result['command']}`, commit {result.get('commit') or 'not recorded'}"],
        ["model", f"`{result['preset']}` preset, seed {result['seed']}, weights stored as {result['weights_dtype']}"],
        [
            "test accuracy (10,000 images)",
            f"**{result['test_accuracy'] * 100:.2f}%** (macro F1 {result['test_macro_f1'] * 100:.2f}%); "
            f"float32 {result['test_accuracy_float32'] * 100:.2f}%, float16 "
            f"{result['test_accuracy_float16'] * 100:.2f}% (allowed cost {result['max_float16_cost_points']} points)",
        ],
        ["first 1,000 test images (the test checks this)", f"{result['test_accuracy_first_1000'] * 100:.1f}%"],
        ["files", f"{result['total_bytes'] / 1e6:.1f} MB in all: {files}"],
        ["trained on", f"CPU {recorded_cpu_class(result['machine'])}"],
    ]
    return render_markdown([Table(["", ""], rows)]).strip() + "\n"


def catalogue_markdown(manifest: dict, root: Path) -> str:
    """`benchmarks/catalogue.py` files, one row per file: throughput, memory, resume, Ray."""
    rows = []
    for name in manifest["files"]:
        r = read_json(root / name)
        full, resume = r["full"], r["resume"]
        early, late = full["rss_early_mib"], full["rss_late_mib"]
        same = r.get("same_as_predict")
        ray = r.get("ray")
        rows.append(
            [
                f"CPU {recorded_cpu_class(r['machine'])}, {r['machine']['cpu_count']} cores [json]({name})",
                f"**{full['images_per_s']:.0f}**",
                f"{full['peak_rss_mib']['with_workers']:.0f} MiB",
                f"command {early['command']:.0f} after {early['rows']:,}, {late['command']:.0f} after "
                f"{late['rows']:,}; with workers {early['with_workers']:.0f}, {late['with_workers']:.0f} "
                "(the workers may have ended by the last sample)",
                f"killed at {resume['killed']['rows_seen']:,} rows; +{resume['overhead_s']:.1f} s, "
                + ("same labels" if resume["same_labels_as_full_run"] else "**labels differ**"),
                "not compared" if same is None else f"{same['differ']} of {same['files']:,} differ",
                "not run"
                if ray is None
                else f"{ray['images_per_s']:.0f} images/s ({ray['time_vs_local']:.2f}x the local time), "
                + ("same labels" if ray["same_labels_as_local"] else "**labels differ**"),
            ]
        )
    header = [
        f"{manifest['photos']}",
        "images/s",
        "peak RSS (with workers)",
        "RSS (MiB) as rows grow",
        "resume after kill -9",
        "labels vs `predict`",
        "`--engine ray`, 2 CPUs",
    ]
    return render_markdown([Table(header, rows)]).strip() + "\n"


def serve_ops_markdown(manifest: dict, root: Path) -> str:
    """What one core serves (`serve_load.py --server-cpu`), and the SIGTERM drain under load."""
    core = read_json(root / manifest["one_core"])
    drain = read_json(root / manifest["drain"])
    lat = core["latency_ms"]
    resets = sum(drain["reset_without_answer"].values())
    statuses = ", ".join(f"{n} x {s}" for s, n in sorted(drain["reached_the_service_by_status"].items()))
    rows = [
        [
            f"one core serves (`{core['backend']}`, {core['clients']} keep-alive clients on the other core)",
            f"`{core['command']}`",
            f"**{core['requests_per_second']:,.0f} requests/s**, p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, "
            f"{core['errors']} errors, {core['wrong_answers']} wrong answers [json]({manifest['one_core']})",
        ],
        [
            f"SIGTERM after {drain['load_seconds']:g} s of load from {drain['clients']} clients",
            f"`{drain['command']}`",
            f"**{drain['answered_not_200']} of {drain['reached_the_service']:,} requests that reached the service "
            f"failed** ({statuses}); {resets} connections reset before their request was read, "
            f"{drain['refused_at_connect']} refused at connect; exit {drain['exit_code']} "
            f"{drain['drain_seconds']:.2f} s after SIGTERM [json]({manifest['drain']})",
        ],
    ]
    cpu = recorded_cpu_class(core["machine"])
    return render_markdown([Table(["what", "command", "result"], rows)]).strip() + f"\n\nCPU {cpu}.\n"


SPACE_TITLES = {
    "pixels": "raw pixels",
    "pca64": "PCA-64 of the pixels",
    "code": "the autoencoder's code",
    "penultimate": "the classifier's penultimate features",
}


def retrieval_markdown(result: dict) -> str:
    """`benchmarks/retrieval.py`: precision by feature space, then the two indexes' recall, latency
    and memory at 60,000 vectors and padded to a million."""
    spaces = []
    for name, s in result["spaces"].items():
        mark = " (default)" if name == result["default_space"] else ""
        spaces.append(
            [
                f"{SPACE_TITLES.get(name, name)}{mark}",
                f"{s['dim']:,}",
                f"{s['precision_at_1'] * 100:.1f}%",
                f"**{s['precision_at_10'] * 100:.1f}%**",
                f"{s['map_at_10'] * 100:.1f}%",
            ]
        )
    cpu = f"CPU {recorded_cpu_class(result['machine'])}, {result['machine']['cpu_count']} cores"
    indexes = []
    for label, block in large_blocks(result, include_60k=True):
        for kind in ("exact", "ivf"):
            r = block[kind]
            how = (
                "exact (`IndexFlatIP`)"
                if kind == "exact"
                else f"IVF, nlist {r['params']['nlist']}, nprobe {r['params']['nprobe']}"
            )
            recall = "1 (by definition)" if kind == "exact" else f"{r['recall_at_10_vs_exact']:.3f}"
            lat = r["latency_ms"]
            precision = f"{r['precision_at_10'] * 100:.1f}%" if "precision_at_10" in r else "not measured"
            latency = f"{lat['p50']:.2f} / **{lat['p99']:.2f}**"
            indexes.append([label, how, recall, precision, latency, f"{r['index_bytes'] / 2**20:,.0f} MiB"])
    header = ["feature space (cosine)", "dimensions", "precision@1", "precision@10", "mAP@10"]
    index_header = [
        f"vectors ({cpu})",
        "index",
        "recall@10 vs exact",
        "precision@10",
        "ms per query p50 / p99",
        "index memory",
    ]
    tables = [Table(header, spaces), Table(index_header, indexes)]
    by_size = result["indexes_60k"].get("exact_latency_ms_by_size")
    if by_size:  # what sets the size below which `index build` stays exact
        tables.append(
            Table(
                ["exact search over", *(f"{int(n):,} vectors" for n in by_size)],
                [["ms per query p50 / p99", *(f"{v['p50']:.2f} / {v['p99']:.2f}" for v in by_size.values())]],
            )
        )
    sweeps = [(label, block["ivf"]["latency_ms_by_nprobe"]) for label, block in large_blocks(result)]
    if sweeps:  # what more recall would cost at that size
        tables.append(
            Table(
                ["IVF at", *(f"nprobe {n}" for n in sweeps[0][1])],
                [[label, *(f"{v['p50']:.2f} / {v['p99']:.2f}" for v in sweep.values())] for label, sweep in sweeps],
            )
        )
    tables.append(Table(["target", "measured", "met"], targets(result)))
    return render_markdown(tables).strip() + "\n"


def large_blocks(result: dict, include_60k: bool = False) -> list[tuple[str, dict]]:
    """(label, block) of each database size the retrieval benchmark measured, smallest first."""
    blocks = [("60,000", result["indexes_60k"])] if include_60k else []
    for key, padding in (("indexes_padded", "random vectors"), ("indexes_augmented", "augmented copies")):
        block = result.get(key)
        if block is not None:
            n_pad = block["vectors"] - block["real_vectors"]
            blocks.append((f"{block['vectors']:,} ({block['real_vectors']:,} real + {n_pad:,} {padding})", block))
    return blocks


def targets(result: dict) -> list[list[str]]:
    """The issue's two figures, judged from the file: precision@10 >= 90% in the better space, and
    p99 <= 5 ms at a million vectors with recall@10 >= 0.95."""
    best = result["spaces"][result["better_model_space"]]["precision_at_10"]
    pixels = result["spaces"]["pixels"]["precision_at_10"]
    rows = [
        [
            "precision@10 >= 90% in the better space",
            f"{best * 100:.1f}% ({result['better_model_space']}; raw pixels {pixels * 100:.1f}%)",
            "yes" if best >= 0.90 else "**no**",
        ]
    ]
    large = [(label, block) for label, block in large_blocks(result) if block["vectors"] >= 1_000_000]
    if not large:
        rows.append(["p99 <= 5 ms at 1M vectors, recall@10 >= 0.95", "not measured at 1M", "**no**"])
    for label, block in large:
        ivf = block["ivf"]
        p99, recall = ivf["latency_ms"]["p99"], ivf["recall_at_10_vs_exact"]
        ok = p99 <= 5 and recall >= 0.95
        rows.append(
            [
                f"p99 <= 5 ms at 1M vectors, recall@10 >= 0.95: {label}",
                f"{p99:.2f} ms, recall {recall:.3f} (IVF, nprobe {ivf['params']['nprobe']})",
                "yes" if ok else "**no**",
            ]
        )
    return rows
