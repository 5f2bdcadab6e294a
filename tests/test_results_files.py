"""The README and docs/ state only what results/ holds: generated tables are current, every results
file says what made it, and the README types no measured figure outside its generated blocks."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import render_readme_tables  # noqa: E402
import results_provenance  # noqa: E402


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True)


def test_generated_tables_in_readme_and_docs_are_rendered_from_results():
    run = _script("render_readme_tables.py", "--check")
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_changed_results_file_changes_its_table(tmp_path):
    # A copy of the headline's files with the `paper` run 5 points better: the table must follow.
    from deepautodnn.experiments.results_tables import claims_markdown

    manifest = json.loads((ROOT / "results" / "headline.json").read_text())
    root = tmp_path / "repo"
    for name in [*manifest["seed_files"], manifest["comparators"], manifest["per_class_run"], *manifest["run_dirs"]]:
        src, dst = ROOT / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    for entry in manifest["latency"]:
        (root / entry["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / entry["file"], root / entry["file"])
    shutil.copytree(ROOT / manifest["ablation"], root / manifest["ablation"], dirs_exist_ok=True)
    before = claims_markdown(manifest, root)
    metrics_path = root / manifest["run_dirs"][0] / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["accuracy"] += 0.05
    metrics_path.write_text(json.dumps(metrics))
    after = claims_markdown(manifest, root)
    assert before != after and f"{metrics['accuracy'] * 100:.2f}%" in after


def test_every_results_file_records_what_made_it():
    run = _script("results_provenance.py", "--check")
    assert run.returncode == 0, run.stdout + run.stderr
    recorded = json.loads((ROOT / "results" / "provenance.json").read_text())["files"]
    for path in results_provenance.results_files():
        entry = recorded[str(path.relative_to(ROOT))]
        missing = [k for k in ("command", "commit", "date", "machine", "seeds") if entry.get(k) in (None, "")]
        assert not missing, f"{path.name}: no {missing}"


def _outside_generated_blocks(text: str) -> str:
    return render_readme_tables.BLOCK.sub("", text)


def test_the_readme_types_no_measured_figure():
    # Percentages and times are results: ours come only from generated blocks. The paper's own
    # claims (93.36% test accuracy, 93.4% in its abstract, about 1 ms per image) may be quoted.
    typed = _outside_generated_blocks((ROOT / "README.md").read_text())
    figures = re.findall(r"\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)? ?ms\b|\d+(?:\.\d+)? ?min\b", typed)
    ours = [f for f in figures if f not in ("93.36%", "93.4%", "1 ms")]
    assert not ours, f"README states figures outside generated blocks: {ours}"


def test_the_readme_reads_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220


@pytest.mark.parametrize("page", ["README.md", *(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_links_to_results_files_resolve(page):
    text = (ROOT / page).read_text()
    base = ROOT if page == "README.md" else ROOT / "docs"
    for target in re.findall(r"\]\(((?:results|\.\./results)/[^)#\s]+)", text):
        assert (base / target).exists(), f"{page}: link to {target} is broken"


def test_speed_cells_name_the_processor_short():
    assert render_readme_tables._processor({"cpu": "Intel(R) Xeon(R) Processor"}) == "Intel Xeon"
    assert render_readme_tables._processor({"cpu": "AMD EPYC"}) == "AMD EPYC"
    assert render_readme_tables._processor({"cpu": "Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz"}) == "Intel Core i7-8550U"
    assert render_readme_tables._processor({}) == "processor not recorded"
