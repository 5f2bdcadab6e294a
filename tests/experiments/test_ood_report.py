"""The out-of-distribution figures: the metrics are right, the benchmark's Markdown is rendered from
its JSON, and the README's generated tables match the files in results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepautodnn.experiments.ood_report import ood_markdown, separation

ROOT = Path(__file__).resolve().parents[2]


def test_separation_metrics():
    assert separation(np.zeros(50), np.ones(50)) == {"auroc": 1.0, "fpr_at_95_tpr": 0.0}
    rng = np.random.default_rng(0)
    same = separation(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same["auroc"] - 0.5) < 0.03 and same["fpr_at_95_tpr"] > 0.9
    flipped = separation(np.ones(50), np.zeros(50))
    assert flipped["auroc"] == 0.0 and flipped["fpr_at_95_tpr"] == 1.0


def test_the_benchmark_report_matches_its_json(tiny_run, data_dir, tmp_path):
    out, md = tmp_path / "ood.json", tmp_path / "ood.md"
    env = {**os.environ, "DEEPAUTODNN_DATA": str(data_dir)}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "ood.py"),
            str(tiny_run[0]),
            "--backend",
            "torch",
            "--n",
            "200",
            "--n-variant",
            "10",
            "--n-foreign",
            "5",
            "--n-timing",
            "5",
            "--out",
            str(out),
            "--markdown",
            str(md),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert md.read_text() == ood_markdown(result)
    assert set(result["in_distribution"]) >= {"test_arrays", "colour_on_gradient_with_shadow", "jpeg_q40"}
    assert len(result["foreign"]) == 13
    for name, row in result["foreign"].items():
        fused = row["detectors"]["fused"]
        assert 0 <= fused["auroc"] <= 1 and 0 <= fused["detected"] <= 1, name
        assert f"| {name} | {row['n']} | {100 * fused['detected']:.1f}% | {fused['auroc']:.3f} |" in md.read_text()
    assert result["predict_ms_per_image"]["median_ms"] > 0


@pytest.mark.parametrize("bad", [{}, {"benchmark": "nope"}])
def test_render_refuses_unknown_json(bad, tmp_path):
    with pytest.raises(KeyError):
        ood_markdown(bad)
