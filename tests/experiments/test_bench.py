"""`deepautodnn bench` runs end to end and its numbers are internally consistent (not timed here:
timings belong in benchmarks/)."""

from __future__ import annotations

import json

import numpy as np

from deepautodnn import cli
from deepautodnn.config import get_preset
from deepautodnn.experiments.bench import bench_training, naive_stage_speed
from deepautodnn.inference.timing import flops_per_image


def test_flops_per_image_counts_convolutions_and_dense_layers():
    import torch

    conv = torch.nn.Conv2d(1, 8, 3, padding=1)  # 28*28 outputs x 8 channels x 9 MACs x 2
    assert flops_per_image(conv) == 28 * 28 * 8 * 9 * 2
    dense = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    assert flops_per_image(dense) == 784 * 10 * 2


def test_naive_reference_trains_the_same_network():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (96, 28, 28), dtype=np.uint8), rng.integers(0, 10, 96)
    for stage in ("ae", "dnn"):
        assert naive_stage_speed(get_preset("paper"), images, labels, stage) > 0


def test_training_bench_reports_every_stage_against_the_reference():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (128, 28, 28), dtype=np.uint8), rng.integers(0, 10, 128)
    out = bench_training(images, labels, n_images=128, peak_seconds=0.2)
    assert set(out["stages"]) == {"ae", "dnn"}
    peak = out["cpu_peak"]
    assert peak["gemm_flops"] > 0 and peak["conv_flops"] == max(peak["conv_flops_by_layout"].values()) > 0
    for row in out["stages"].values():
        assert row["speedup_fp32"] == row["ours_fp32_images_per_s"] / row["naive_images_per_s"]
        assert row["ours_fp32_channels_last_images_per_s"] > 0
        # Each loop's rate reads as a share of this CPU's float32 limits.
        assert row["ours_fp32_of_conv_peak"] == row["ours_fp32_gflops_per_s"] * 1e9 / peak["conv_flops"]
        assert row["naive_of_gemm_peak"] == row["naive_gflops_per_s"] * 1e9 / peak["gemm_flops"]


def test_bench_command_infer_json(data_dir, capsys, tmp_path):
    out = tmp_path / "bench.json"
    assert (
        cli.main(
            [
                "bench",
                "--what",
                "infer",
                "--json",
                "--seconds",
                "0.05",
                "--batches",
                "1",
                "8",
                "--data-dir",
                str(data_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    peak = printed["inference"]["cpu_peak"]["gemm_flops"]
    for arch in ("paper", "fast"):
        graphs = printed["inference"]["architectures"][arch]["graphs"]
        # predict, as served, is classify plus the features it already computes: no reconstruction.
        assert graphs["predict"]["flops_per_image"] == graphs["classify"]["flops_per_image"] > 0
        for name in ("torch", "onnx", "onnx-int8"):
            row = graphs["classify"]["backends"][name]["speed"]["8"]
            assert abs(row["achieved_flops"] - row["images_per_s"] * graphs["classify"]["flops_per_image"]) < 1
            assert row["fraction_of_gemm_peak"] == row["achieved_flops"] / peak
    assert printed["peak_rss_mib"] > 0


def test_bench_rejects_bad_options(capsys):
    assert cli.main(["bench", "--seconds", "0"]) == 2
    assert "--seconds" in capsys.readouterr().err
