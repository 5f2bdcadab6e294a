"""The one-file report: every section present, figures embedded, numbers equal to their JSON."""

from __future__ import annotations

import re

import pytest

from deepautodnn import cli, paper
from deepautodnn.experiments.ablation import _finish
from deepautodnn.experiments.baselines import load_results, run_baselines
from deepautodnn.utils.files import read_json

SECTIONS = ["The paper's claims", "Table IV", "Table V", "Figures", "Inference time", "Ablations"]


@pytest.fixture(scope="module")
def report_inputs(tiny_run, data_dir, tmp_path_factory):
    run_dir, _ = tiny_run
    root = tmp_path_factory.mktemp("report")
    run_baselines(
        root / "bl", ["convnet", "logreg"], data_dir=data_dir, train_limit=1000, torch_epochs=2, echo=lambda m: None
    )
    abl = root / "abl"
    (abl / "rows").mkdir(parents=True)
    rows = {}
    for seed, acc in enumerate([0.81, 0.84, 0.86]):
        for variant, shift in (("frozen", 0.0), ("scratch", 0.02)):
            rows[f"{variant}/100/seed{seed}"] = {
                "variant": variant,
                "labels": 100,
                "all_labels": False,
                "seed": seed,
                "test_accuracy": acc + shift,
                "seconds": 1.0,
            }
    for key, row in rows.items():
        (abl / "rows" / (key.replace("/", "-") + ".json")).write_text(__import__("json").dumps(row))
    _finish({"preset": "fast", "machine": {"cpu": "test"}, "rows": {}}, abl)
    out = root / "out"
    rc = cli.main(
        [
            "report",
            str(run_dir),
            "--baselines",
            str(root / "bl"),
            "--ablations",
            str(abl),
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
            "--repeats",
            "5",
        ]
    )
    assert rc == 0
    return run_dir, root / "bl", abl, out


def _table_rows(text: str, first_header: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header starts with `first_header`, by first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


def test_report_has_every_section_and_embedded_figures(report_inputs):
    _, _, _, out = report_inputs
    md = (out / "paper_report.md").read_text()
    html = (out / "paper_report.html").read_text()
    for section in SECTIONS:
        assert re.search(rf"^## {re.escape(section)}", md, re.M), section
        assert f"<h2>{section}" in html.replace("&#x27;", "'"), section
    for caption in ("Fig. 4", "Figs. 5-6", "reconstructions", "most confident mistakes", "PCA"):
        assert caption in md and caption in html
    # Five figures, each an embedded PNG, in both files; no links to files beside them.
    assert md.count("](data:image/png;base64,iVBOR") == 5
    assert html.count('src="data:image/png;base64,iVBOR') == 5
    assert ".png)" not in md


def test_table_iv_numbers_equal_the_json(report_inputs):
    run_dir, bl, _, out = report_inputs
    rows = _table_rows((out / "paper_report.md").read_text(), "Model")
    metrics = read_json(run_dir / "metrics.json")
    assert rows["DeepAutoNN-ours"][:2] == [f"{paper.TEST_ACCURACY * 100:.2f}%", f"{metrics['accuracy'] * 100:.2f}%"]
    results = load_results(bl)
    convnet = results["convnet"]
    assert rows[convnet["paper_row"]][:3] == [
        f"{convnet['paper_accuracy'] * 100:.2f}%",
        f"{convnet['accuracy'] * 100:.2f}%",
        f"{convnet['train_seconds']:.0f}",
    ]
    logreg = results["logreg"]
    assert rows[logreg["title"]][:2] == ["—", f"{logreg['accuracy'] * 100:.2f}%"]
    # Every Table IV row of the paper is there, rebuilt or with the reason it is not.
    assert set(paper.TABLE_IV) <= set(rows)
    assert rows["HitNet [17]"][1] == "—" and "not rebuilt" in rows["HitNet [17]"][3]


def test_table_v_and_ablation_numbers_equal_the_json(report_inputs):
    run_dir, _, abl, out = report_inputs
    md = (out / "paper_report.md").read_text()
    rows = _table_rows(md, "Label")
    metrics = read_json(run_dir / "metrics.json")
    for name, m in metrics["per_class"].items():
        paper_p, paper_r, paper_f1 = paper.TABLE_V[name]
        assert rows[name] == [
            str(paper_p),
            f"{m['precision'] * 100:.1f}",
            str(paper_r),
            f"{m['recall'] * 100:.1f}",
            str(paper_f1),
            f"{m['f1'] * 100:.1f}",
            f"{m['specificity'] * 100:.1f}",
        ]
    ablation = _table_rows(md, "Variant")
    summary = {s["variant"]: s for s in read_json(abl / "ablation.json")["summary"]}
    for variant in ("frozen", "scratch"):
        s = summary[variant]
        assert ablation[variant] == [f"{s['test_accuracy_mean'] * 100:.2f}% ± {s['test_accuracy_std'] * 100:.2f} (n=3)"]
    assert summary["frozen"]["test_accuracy_mean"] == pytest.approx(0.8366666, abs=1e-6)


def test_report_on_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "metrics.json" in err


def test_claims_are_judged_by_the_preset_that_tests_them(report_inputs, data_dir, tmp_path):
    run_dir, bl, _, out = report_inputs
    rows = _table_rows((out / "paper_report.md").read_text(), "Claim")
    architecture = next(v for k, v in rows.items() if k.startswith("The paper's architecture"))
    assert architecture[-1] == "not measured"  # a `fast` run does not test the paper's architecture

    # A `paper` run given with --with-run is what judges it, beside the `fast` run.
    paper_run = tmp_path / "paper_run"
    paper_run.mkdir()
    metrics = read_json(run_dir / "metrics.json") | {"preset": "paper", "accuracy": paper.TEST_ACCURACY - 0.01}
    (paper_run / "metrics.json").write_text(__import__("json").dumps(metrics))
    from deepautodnn.experiments.markdown import render_markdown
    from deepautodnn.experiments.report import build_report

    md = render_markdown(
        build_report(run_dir, baselines_dir=bl, with_runs=[paper_run], data_dir=data_dir, timing_repeats=2)
    )
    rows = _table_rows(md, "Claim")
    architecture = next(v for k, v in rows.items() if k.startswith("The paper's architecture"))
    assert architecture[-1] == "no" and "`paper`" in architecture[1]
    beats = [k for k in rows if k.startswith("It beats every Table IV method")]
    assert any("`paper`" in k for k in beats)


def test_with_run_without_metrics_is_a_clear_error(report_inputs, tmp_path, capsys):
    run_dir, _, _, _ = report_inputs
    rc = cli.main(["report", str(run_dir), "--with-run", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc != 0
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "metrics.json" in err and "Traceback" not in err
