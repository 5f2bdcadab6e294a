"""Run under torchrun (or alone, as the single-process reference) by tests/training/test_distributed.py.

Trains a tiny DeepAutoDNN on fixed random data through the real stage functions:
1. the DNN on the frozen encoder ("dnn", no BatchNorm, no dropout), whose final weights the test
   compares with a single-process run of the same global batch;
2. then end to end ("finetune", with BatchNorm), checking after every optimiser step that all
   ranks hold bit-identical parameters.
Rank 0 writes OUT/result-world{N}.json and OUT/dnn-world{N}.npy.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from deepautodnn.config import ModelConfig, TrainConfig
from deepautodnn.data.transforms import to_device_data
from deepautodnn.models.hybrid import DeepAutoDNN
from deepautodnn.training import distributed
from deepautodnn.training.stages import train_classifier
from deepautodnn.utils.runtime import seed_everything


def flat_params(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def main(out: Path) -> None:
    ctx = distributed.init(torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (320, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 320)
    data = to_device_data(images, labels, np.arange(256), np.arange(256, 320), "cpu")
    seed_everything(0)
    model = DeepAutoDNN(
        ModelConfig(
            encoder_channels=(4, 8), encoder_pool=(True, True), ae_dropout=0.0, dnn_hidden=(32, 16), dnn_dropout=0.0
        )
    )
    tcfg = TrainConfig(
        finetune_epochs=2,
        finetune_batch_size=32,
        dnn_epochs=3,
        dnn_batch_size=32,
        keep_best_epoch=False,
        schedule="onecycle",
    )
    mismatches, steps = [], []

    def check_identical(step: int) -> None:
        mine = flat_params(model)
        gathered = [torch.empty_like(mine) for _ in range(ctx.world_size)]
        if ctx.enabled:
            torch.distributed.all_gather(gathered, mine)
        else:
            gathered = [mine]
        steps.append(step)
        mismatches.append(max(float((g - gathered[0]).abs().max()) for g in gathered))

    log = lambda row: None  # noqa: E731
    train_classifier(model, data, tcfg, stage="dnn", seed=0, device=torch.device("cpu"), log=log, ctx=ctx)
    dnn_weights = flat_params(model.classifier).numpy()
    train_classifier(
        model,
        data,
        tcfg,
        stage="finetune",
        seed=0,
        device=torch.device("cpu"),
        log=log,
        ctx=ctx,
        on_step=check_identical,
    )
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"dnn-world{ctx.world_size}.npy", dnn_weights)
        result = {"world_size": ctx.world_size, "steps": len(steps), "max_rank_mismatch": max(mismatches)}
        (out / f"result-world{ctx.world_size}.json").write_text(json.dumps(result))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
