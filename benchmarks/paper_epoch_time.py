"""Seconds per epoch of each stage of the `paper` preset on this machine, by timing real epochs on
a subset of Fashion-MNIST and extrapolating to the 55,000 training images. Prints JSON.

    python benchmarks/paper_epoch_time.py [--subset 6400] [--device cpu] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from deepautodnn import get_preset
from deepautodnn.data.transforms import to_device_data
from deepautodnn.models.hybrid import build_model
from deepautodnn.training.run import load_training_split
from deepautodnn.training.stages import train_autoencoder, train_classifier
from deepautodnn.utils.runtime import machine_info, select_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=6400, help="training images timed per stage (default: 6400)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="time with bf16 autocast + channels_last")
    args = parser.parse_args()

    cfg = get_preset("paper")
    cfg.train.ae_epochs = cfg.train.dnn_epochs = 1
    cfg.train.bf16 = cfg.train.channels_last = args.bf16
    device = select_device(args.device)
    images, labels, train_idx, val_idx = load_training_split(cfg)  # the split every run uses
    full_train = len(train_idx)
    # Validation shrinks in proportion, so one timed epoch scales exactly to a full one.
    val_subset = round(len(val_idx) * args.subset / full_train)
    data = to_device_data(images, labels, train_idx[: args.subset], val_idx[:val_subset], device)
    model = build_model(cfg, seed=0, device=device)  # channels_last with --bf16, as cfg says
    rows: list[dict] = []
    scale = full_train / len(data.x_train)
    results = {}
    for stage in ("ae", "dnn"):
        start = time.perf_counter()
        if stage == "ae":
            train_autoencoder(model, data, cfg.train, seed=0, device=device, log=rows.append)
        else:
            train_classifier(model, data, cfg.train, stage="dnn", seed=0, device=device, log=rows.append)
        total = time.perf_counter() - start
        epoch = rows[-1]["seconds"]  # training + validation of one epoch, both at subset scale
        results[stage] = {
            "timed_images": len(data.x_train),
            "timed_epoch_seconds": round(epoch, 3),
            "images_per_second": round(len(data.x_train) / epoch, 1),
            "seconds_per_full_epoch": round(epoch * scale, 1),
            # Once per stage, outside the epochs: e.g. computing the frozen encoder's features.
            "one_off_seconds": round((total - epoch) * scale, 1),
        }
    paper = get_preset("paper").train  # the real epoch counts, not the 1-epoch timing config
    epochs = {"ae": paper.ae_epochs, "dnn": paper.dnn_epochs}
    full = sum(results[s]["seconds_per_full_epoch"] * epochs[s] + results[s]["one_off_seconds"] for s in results)
    print(
        json.dumps(
            {
                "benchmark": "paper_epoch_time",
                "command": "python " + " ".join(sys.argv),
                "precision": "bf16+channels_last" if args.bf16 else "fp32",
                "device": str(device),
                "machine": machine_info(),
                "train_images": full_train,
                "stages": results,
                "epochs": epochs,
                "extrapolated_full_run_hours": round(full / 3600, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
