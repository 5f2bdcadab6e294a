"""Render the generated tables of README.md and docs/*.md from the files in results/, in place.

A generated block sits between two markers that name its source, and optionally a view of it:

    <!-- begin generated: results/ood_fast_seed0_cpu.json -->
    ...
    <!-- end generated -->
    <!-- begin generated: results/headline.json claims -->

and is replaced by what the renderer for that view (by default, the file's `benchmark` field; for a
folder, the `ablate` table of its ablation.json) makes from it. `--check` only reports a stale
block (and exits 1), which is what the test suite runs.

    python scripts/render_readme_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from deepautodnn.utils.runtime import recorded_cpu_class

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"(<!-- begin generated: (?P<src>[^ ]+)(?: (?P<view>\w+))? -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def cli_startup_markdown(result: dict) -> str:
    """`benchmarks/cli_startup.py`: this commit against the one it was compared with, per command."""
    machine = result["machine"]
    cpu = f"{machine['cpu']}, {'AVX-512 BF16' if machine['cpu_bf16'] else machine['cpu_capability']}"
    before = result["compared_with"]
    lines = [
        f"| command | {before['commit']}: seconds | MiB | torch | {result['commit']}: seconds | MiB | torch |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for name, now in result["results"].items():
        old = before["results"][name]
        lines.append(
            f"| `{name}` | {old['median_seconds']:.2f} | {old['median_peak_rss_mib']:.0f} | "
            f"{'yes' if old['imports_torch'] else 'no'} | {now['median_seconds']:.2f} | "
            f"{now['median_peak_rss_mib']:.0f} | {'yes' if now['imports_torch'] else 'no'} |"
        )
    lines.append(
        f"\nMedians of {result['repeats']} fresh processes each (wall time, peak RSS); {cpu}; `{result['command']}`.\n"
    )
    return "\n".join(lines) + "\n"


def _fast_preset_cell(r: dict) -> str:
    trained = r.get("preset_trained", r["preset"])
    train = sum(seed["train_seconds"] for seed in r["per_seed"]) / len(r["per_seed"])
    return (
        f"`{trained}`: **{r['test_accuracy_mean'] * 100:.2f}% ± {r['test_accuracy_std'] * 100:.2f}** test "
        f"({len(r['seeds'])} seeds), **{r['wall_seconds_mean'] / 60:.1f} min** wall per run, of which "
        f"training {train / 60:.1f} min"
    )


def _bench_train_cell(r: dict) -> str:
    ae = r["training"]["stages"]["ae"]
    cells = [
        f"float32 **{ae['ours_fp32_images_per_s']:.0f} img/s**, channels_last "
        f"{ae['ours_fp32_channels_last_images_per_s']:.0f} (naive loop {ae['naive_images_per_s']:.0f})"
    ]
    if "ours_bf16_images_per_s" in ae:
        cells.append(f"bf16 {ae['ours_bf16_images_per_s']:.0f}")
    peak = r["training"]["cpu_peak"]
    cells.append(
        f"float32 limits: GEMM {peak['gemm_flops'] / 1e9:.0f}, 3x3 convolution {peak['conv_flops'] / 1e9:.0f} "
        f"GFLOP/s; ours float32 at {ae['ours_fp32_of_conv_peak'] * 100:.0f}% of the latter"
    )
    return "; ".join(cells)


def _bench_infer_cell(r: dict) -> str:
    fast = r["inference"]["architectures"]["fast"]
    auto = fast.get("auto", {}).get("backend")
    rows = fast["graphs"]["predict"]["backends"]
    if auto not in rows:
        return "-"
    return f"**{rows[auto]['speed']['1']['p50_ms']:.3f} ms** (`{auto}`)"


def _export_cell(r: dict) -> str:
    chosen = r["chosen"]
    return f"{r['backends'][chosen]['batch1_p50_ms']:.3f} ms (`{chosen}`)"


def _serve_cell(r: dict) -> str:
    lengths = r.get("length_failures", 0)
    return (
        f"**{r['requests_per_second']:.0f} req/s**, p99 {r['latency_ms']['p99']:.0f} ms, "
        f"{r['errors']} failed"
        + (f" ({lengths} answers of another length)" if lengths else "")
        + f", {r['workers']} worker{'s' if r['workers'] > 1 else ''}"
    )


SPEED_ROWS = {  # source kind: (row title, cell renderer)
    "fast_preset": ("`fast` preset, `python benchmarks/fast_preset.py --seeds 0 1 2`", _fast_preset_cell),
    "bench_train": ("autoencoder stage, `paper` architecture, batch 32 (`bench --what train`)", _bench_train_cell),
    "bench_infer": ("`fast` model, one image, p50, `auto` backend (`bench --what infer`)", _bench_infer_cell),
    "export": ("the same, as `export` measured it when choosing (`backend.json`)", _export_cell),
    "serve_ab": ("service, `ab -c 32`, a new connection per request (`serve_load.py --ab`)", _serve_cell),
}
CLASS_TITLES = {
    "avx512-bf16": "AVX-512 with BF16",
    "avx2 (limited, on an avx512-bf16 CPU)": "AVX2, imitated: the same CPU limited to AVX2",
    "avx2": "AVX2 + FMA",
}


def _processor(machine: dict) -> str:
    """The processor a file was measured on, short: "Intel Xeon", "AMD EPYC"."""
    name = re.sub(r"\((R|TM)\)|\bProcessor\b|\bCPU\b", "", machine.get("cpu", "")).split("@")[0]
    return " ".join(name.split()) or "processor not recorded"


def speed_markdown(result: dict) -> str:
    """`results/speed_by_cpu.json`: one row per figure, one column per CPU class, every cell from
    the results file the manifest names (with its class from that file's own machine record)."""
    cells: dict[str, dict[str, list[str]]] = {kind: {} for kind in SPEED_ROWS}
    for kind, files in result["sources"].items():
        for name in files:
            source = json.loads((ROOT / name).read_text())
            cells[kind].setdefault(recorded_cpu_class(source["machine"]), []).append(
                f"{SPEED_ROWS[kind][1](source)} ({_processor(source['machine'])}) [json]({name})"
            )
    classes = result["classes"]
    lines = [
        "| figure | " + " | ".join(CLASS_TITLES.get(c, c) for c in classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for kind, (title, _) in SPEED_ROWS.items():
        row = ("<br>".join(cells[kind][c]) if c in cells[kind] else "not measured" for c in classes)
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\n" + result["note"] + "\n"


def render(source: str, view: str | None = None) -> str:
    from deepautodnn.experiments import results_tables
    from deepautodnn.experiments.ood_report import ood_markdown, variants_markdown

    path = ROOT / source
    if path.is_dir():
        return results_tables.ablation_markdown(json.loads((path / "ablation.json").read_text()))
    result = json.loads(path.read_text())
    renderers = {
        "ood": ood_markdown,
        "photo_variants": variants_markdown,
        "cli_startup": cli_startup_markdown,
        "speed_by_cpu": speed_markdown,
        "headline": lambda r: results_tables.headline_markdown(r, ROOT),
        "claims": lambda r: results_tables.claims_markdown(r, ROOT),
        "table_iv": lambda r: results_tables.table_iv_markdown(r, ROOT),
        "bench": results_tables.bench_markdown_section,
        "reliability_table": lambda r: results_tables.reliability_markdown(r, ROOT),
        "serve_load_table": lambda r: results_tables.serve_load_markdown(r, ROOT),
        "pretrained": results_tables.pretrained_markdown,
        "catalogue_table": lambda r: results_tables.catalogue_markdown(r, ROOT),
        "serve_ops_table": lambda r: results_tables.serve_ops_markdown(r, ROOT),
        "retrieval": results_tables.retrieval_markdown,
    }
    return renderers[view or result["benchmark"]](result)


def rendered_page(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("src"), m.group("view")) + m.group(5), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale; change nothing")
    args = parser.parse_args()
    stale = []
    for name in PAGES:
        page = ROOT / name
        text = page.read_text()
        new = rendered_page(text)
        if new != text:
            stale.append(name)
            if not args.check:
                page.write_text(new)
    if args.check:
        print(
            f"generated tables stale in {', '.join(stale)}; run scripts/render_readme_tables.py"
            if stale
            else "generated tables are current"
        )
        return int(bool(stale))
    print(f"rendered: {', '.join(stale) or 'nothing changed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
