"""Inference time of a trained model directory on this machine, float32 eager PyTorch: per-image
latency at batch 1 (the paper's "0.001 second/image") and throughput at larger batches. Prints JSON.

    python benchmarks/inference_time.py MODEL_DIR [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from deepautodnn import load_fashion_mnist, load_model
from deepautodnn.inference.timing import inference_timing
from deepautodnn.models.serialization import load_config
from deepautodnn.utils.runtime import machine_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--repeats", type=int, default=200, help="timed passes at batch 1 (default: 200)")
    args = parser.parse_args()
    model = load_model(args.model_dir)
    images, _ = load_fashion_mnist("test")
    x = torch.from_numpy(images).unsqueeze(1)  # (10000, 1, 28, 28) uint8
    timing = inference_timing(model, x, args.repeats)
    result = {
        "benchmark": "inference_time",
        "command": "python " + " ".join(sys.argv),
        "model_dir": args.model_dir,
        "preset": load_config(args.model_dir).preset,
        # The inference path is encoder + classifier; the decoder is not run.
        "inference_parameters": sum(p.numel() for m in (model.encoder, model.classifier) for p in m.parameters()),
        **timing,
        "paper_claim_seconds_per_image": 0.001,
        "machine": machine_info(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
