"""`deepautodnn bench` runs end to end and its numbers are internally consistent (not timed here:
timings belong in benchmarks/)."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from deepautodnn import cli
from deepautodnn.config import get_preset
from deepautodnn.experiments.bench import bench_training, naive_stage_speed, our_stage_speed
from deepautodnn.inference.timing import flops_per_image
from tests.helpers.models import TINY


def test_flops_per_image_counts_convolutions_and_dense_layers():
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)  # 28*28 outputs x 8 channels x 9 MACs x 2
    assert flops_per_image(conv) == 28 * 28 * 8 * 9 * 2
    dense = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    assert flops_per_image(dense) == 784 * 10 * 2


def _train_both(monkeypatch, stage: str) -> tuple[dict, dict, dict]:
    """Initial weights, then the naive reference's and our loop's weights after each trains `stage`
    for its two epochs on the same 160 images, in the same order."""
    import deepautodnn.experiments.bench as bench

    cfg = get_preset("paper")  # the paper's batch sizes and rates; a tiny network trains in a second
    cfg.model = dataclasses.replace(TINY, ae_dropout=0.0, dnn_dropout=0.0)  # no noise to tell the runs apart
    cfg.train.cache_features_gib = 0.0  # our DNN stage reruns the float32 encoder, as the reference does
    built = []  # (initial weights, the model), per build
    build = bench.build_model

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        built.append((copy.deepcopy(model.state_dict()), model))
        return model

    monkeypatch.setattr(bench, "build_model", recording_build)
    # The reference's DataLoader and our loop both draw their order from torch.randperm: in order,
    # their steps see the same batches and can be compared weight for weight.
    arange = torch.arange
    monkeypatch.setattr(torch, "randperm", lambda n, *a, device=None, **k: arange(n, device=device))
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (160, 28, 28), dtype=np.uint8), rng.integers(0, 10, 160)
    naive_stage_speed(cfg, images, labels, stage)
    our_stage_speed(cfg, images, labels, stage, bf16=False)
    (naive_start, naive), (ours_start, ours) = built
    for name, value in naive_start.items():
        torch.testing.assert_close(ours_start[name], value, rtol=0, atol=0, msg=f"{name} starts apart")
    return naive_start, naive.state_dict(), ours.state_dict()


@pytest.mark.parametrize(("stage", "trained"), [("ae", "autoencoder."), ("dnn", "classifier.")])
def test_naive_reference_trains_the_same_network(monkeypatch, stage, trained):
    start, naive, ours = _train_both(monkeypatch, stage)
    assert naive.keys() == ours.keys() == start.keys()
    for name, value in start.items():
        if not value.is_floating_point():  # BatchNorm's step counters
            continue
        # The stage trains its own part of the network and leaves the rest (BatchNorm statistics too).
        moved = not torch.equal(naive[name], value)
        assert moved == name.startswith(trained), f"{stage}: {name} {'moved' if moved else 'stayed'}"
        assert torch.equal(ours[name], value) != moved, f"{stage}: ours and the reference differ on {name}"
        # Same batches, loss, optimiser, rate and modes: the same weights, up to float32 rounding.
        torch.testing.assert_close(naive[name], ours[name], rtol=1e-4, atol=1e-6, msg=f"{stage}: {name}")


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
