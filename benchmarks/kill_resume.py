"""Kill a real training run again and again, resume it each time, and compare its final weights
with a run never interrupted. Prints JSON; also times one training-state save per architecture.

    python benchmarks/kill_resume.py --kills 12 --out results/kill_resume_cpu.json

The run is the `fast` preset on --train-limit images for 2 + 2 + --finetune-epochs epochs, in
deterministic mode. The interruptions, drawn from --seed: kill -9 at a random moment after a new
checkpoint appears, kill -9 frozen in the middle of writing a state's tensors or its JSON, and
one Ctrl-C. After each, the newest checkpoint must load; at the end the SHA-256 of
model.safetensors must equal the uninterrupted run's. tests/training/test_resume.py does the same briefly.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _emit import emit_json

from deepautodnn.experiments.interrupt import Interruption, interrupt
from deepautodnn.utils.files import sha256_hex  # noqa: E402
from deepautodnn.utils.runtime import machine_info  # noqa: E402


def save_seconds(preset: str, repeats: int = 3) -> dict:
    """Time one training-state save of `preset`'s network, with Adam moments and a best copy."""
    import torch

    from deepautodnn.config import get_preset
    from deepautodnn.models.hybrid import DeepAutoDNN
    from deepautodnn.training.state import Checkpointer, optimizer_tensors

    model = DeepAutoDNN(get_preset(preset).model)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    opt_tensors, groups = optimizer_tensors(optimizer)
    tensors = {
        **{f"model.{k}": v for k, v in model.state_dict().items()},
        **{f"best.{k}": v for k, v in model.state_dict().items()},
        **opt_tensors,
    }
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(1, repeats + 1):
            start = time.perf_counter()
            Checkpointer(tmp).save(
                stage="finetune", epoch=epoch, batch=0, tensors=tensors, meta={"optimizer_groups": groups}
            )
            times.append(time.perf_counter() - start)
        size = sum(p.stat().st_size for p in Path(tmp).glob(f"state-*-e{repeats:05d}-*"))
    return {"preset": preset, "bytes": size, "seconds_median": round(sorted(times)[len(times) // 2], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12, help="interruptions, one Ctrl-C among them (default: 12)")
    parser.add_argument("--train-limit", type=int, default=10000, help="training images (default: 10000)")
    parser.add_argument("--finetune-epochs", type=int, default=14, help="fine-tuning epochs (default: 14)")
    parser.add_argument("--seed", type=int, default=0, help="draws the interruptions (default: 0)")
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    train = [
        "train",
        "--preset",
        "fast",
        "--ae-epochs",
        "2",
        "--dnn-epochs",
        "2",
        "--finetune-epochs",
        str(args.finetune_epochs),
        "--train-limit",
        str(args.train_limit),
        "--deterministic",
        "--quiet",
        *data,
    ]
    work = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    start = time.perf_counter()
    straight = subprocess.run(
        [sys.executable, "-m", "deepautodnn", *train, "--out", str(work / "straight")], capture_output=True, text=True
    )
    straight_seconds = time.perf_counter() - start
    if straight.returncode != 0:
        sys.exit(straight.stderr[-3000:])

    run, records = work / "cut", []
    kinds = ["random", "random", "mid-save-tensors", "random", "mid-save-json"]
    for i in range(args.kills):
        how = "ctrl-c" if i == args.kills // 2 else kinds[i % len(kinds)]
        what = Interruption(how, delay=rng.uniform(0, 2.0), nth_save=rng.randint(1, 2))
        command = [*train, "--out", str(run)] if i == 0 else ["train", "--resume", str(run), *data]
        record = interrupt(command, run, what, work)
        if record["exit_code"] in (-9, 130):
            del record["stderr_tail"]  # kept only where the run ended some other way
        records.append(record)
        print(f"{i + 1}: {how}, exit {record['exit_code']}, newest checkpoint {record.get('newest')}", file=sys.stderr)
        if record["ended_before_signal"]:
            break  # the run finished first: no more to interrupt
    final = subprocess.run(
        [sys.executable, "-m", "deepautodnn", "train", "--resume", str(run), *data], capture_output=True, text=True
    )
    sha = lambda p: sha256_hex(p.read_bytes()) if p.exists() else None  # noqa: E731
    straight_sha, resumed_sha = sha(work / "straight" / "model.safetensors"), sha(run / "model.safetensors")
    emit_json(
        {
            "benchmark": "kill_resume",
            "command": "python " + " ".join(sys.argv),
            "interruptions": len(records),
            "survived": sum(1 for r in records if r.get("loads") and not r["ended_before_signal"]),
            "by_kind": {k: sum(1 for r in records if r["how"] == k) for k in sorted({r["how"] for r in records})},
            "final_exit_code": final.returncode,
            "weights_identical_to_uninterrupted": straight_sha is not None and straight_sha == resumed_sha,
            "sha256_uninterrupted": straight_sha,
            "sha256_resumed": resumed_sha,
            "uninterrupted_seconds": round(straight_seconds, 1),
            "records": records,
            "state_save": [save_seconds("paper"), save_seconds("fast")],
            "machine": machine_info(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
