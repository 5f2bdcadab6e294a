"""Fuzz one of deepautodnn's input readers with hypothesis, in a process of its own.

    python tests/helpers/fuzz_worker.py TARGET EXAMPLES [--seed N]

Each case feeds random bytes, or a valid sample with random bytes changed, inserted or cut
off, to the reader (for "config-fields": a valid config with fields set to random JSON values). The properties checked for every case:
- nothing escapes but deepautodnn's own error types (DeepAutoDNNError);
- no case takes longer than DEADLINE_MS (hypothesis' deadline), and one that hangs is
  interrupted after HARD_LIMIT_S and fails;
- memory stays bounded: the address space is capped at MEMORY_HEADROOM above what the process
  holds after its imports, so a reader that tried to allocate far more fails with MemoryError.
Prints one JSON line: {"target", "cases", "seed", "outcomes": {"accepted": n, "<ErrorType>": n},
"seconds"}; a case may call the reader more than once (the IDX target: from bytes and from a file).
The test suite runs each target briefly; benchmarks/fuzz_inputs.py runs them long.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import json
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from idx import idx_bytes  # beside this script: the suite's own IDX writer

from deepautodnn.config import Config, ModelConfig, get_preset
from deepautodnn.data.fashion_mnist import parse_idx, read_idx
from deepautodnn.data.preprocess import load_image
from deepautodnn.data.sources import load_csv, load_image_folder
from deepautodnn.errors import DeepAutoDNNError
from deepautodnn.models.hybrid import DeepAutoDNN
from deepautodnn.models.serialization import CONFIG_FILE, config_to_json, load_config, load_weights, save_weights

DEADLINE_MS = 5000  # hypothesis fails a case that finishes slower than this
HARD_LIMIT_S = 30  # and interrupts one that doesn't finish at all
MEMORY_HEADROOM = 3 * 2**30
MAX_INPUT = 64 * 1024  # bytes per fuzzed input
outcomes: collections.Counter = collections.Counter()


def _record(call) -> None:
    try:
        call()
    except DeepAutoDNNError as err:  # the one kind of failure allowed
        outcomes[type(err).__name__] += 1
    else:
        outcomes["accepted"] += 1


@st.composite
def mutated(draw, samples: list[bytes]) -> bytes:
    """A valid sample with up to 8 random edits: a byte overwritten, bytes inserted, a cut."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["set", "insert", "cut"]))
        at = draw(st.integers(0, len(data)))
        if kind == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def fuzzed(samples: list[bytes]):
    return st.one_of(st.binary(max_size=MAX_INPUT), mutated(samples))


# --- valid samples -------------------------------------------------------------------------------


def idx_samples() -> list[bytes]:
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    raw = [idx_bytes(images), idx_bytes(np.arange(5, dtype=np.uint8)), idx_bytes(np.ones((2, 3), np.float32))]
    return raw + [gzip.compress(r) for r in raw]


def image_samples() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, (12, 9), dtype=np.uint8))
    out = []
    for img, fmt in [
        (grey, "PNG"),
        (grey.convert("RGB"), "JPEG"),
        (grey.convert("RGBA"), "PNG"),
        (grey.convert("P"), "GIF"),
        (grey, "BMP"),
        (grey.convert("RGB"), "TIFF"),
        (grey.convert("RGB"), "WEBP"),
        (grey.convert("I;16"), "PNG"),
        (grey.convert("F"), "TIFF"),
    ]:
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append(buf.getvalue())
    return out


FOLDER_GOOD_IMAGE = image_samples()[0]


def csv_samples() -> list[bytes]:
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 17))
    rows = [",".join(str(v) for v in [k % 3, *range(k, k + 16)]) for k in range(6)]
    return ["\n".join([header, *rows]).encode()]


def config_samples() -> list[bytes]:
    return [json.dumps(config_to_json(get_preset(name), seed=0)).encode() for name in ("paper", "fast")]


# --- targets -------------------------------------------------------------------------------------


def target_idx(data: bytes, workdir: Path) -> None:
    _record(lambda: parse_idx(data, "fuzzed"))
    path = workdir / "fuzzed-idx.gz"
    path.write_bytes(data)
    _record(lambda: read_idx(path))


def target_image(data: bytes, workdir: Path) -> None:
    _record(lambda: load_image(data, 28, name="fuzzed"))


def target_csv(data: bytes, workdir: Path) -> None:
    path = workdir / "fuzzed.csv"
    path.write_bytes(data)
    _record(lambda: load_csv(path, 4))


def target_imagefolder(data: bytes, workdir: Path) -> None:
    # Two classes, each with a good image and half of the fuzzed bytes, so both the "skip the bad
    # file" path and the "a class has no readable image" path get exercised.
    root = Path(tempfile.mkdtemp(dir=workdir))
    good = FOLDER_GOOD_IMAGE
    for k, chunk in enumerate((data[: len(data) // 2], data[len(data) // 2 :])):
        (root / f"class{k}").mkdir()
        (root / f"class{k}" / "fuzzed.png").write_bytes(chunk)
        if len(data) % 3:  # most cases; the rest have only the fuzzed file
            (root / f"class{k}" / "good.png").write_bytes(good)
    _record(lambda: load_image_folder(root, 28))
    shutil.rmtree(root)


def target_config(data: bytes, workdir: Path) -> None:
    (workdir / CONFIG_FILE).write_bytes(data)

    def load_and_build() -> None:
        cfg = load_config(workdir)
        import torch

        with torch.device("meta"):  # an accepted config must also build (on "meta": no memory)
            DeepAutoDNN(cfg.model)

    _record(load_and_build)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=20,
)


@st.composite
def config_dicts(draw) -> dict:
    """A valid config with random fields set to random JSON values (and some unknown fields)."""
    raw = json.loads(draw(st.sampled_from(config_samples())))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["model", "train", None]))
        holder = raw[section] if isinstance(raw.get(section), dict) else raw  # a section may be gone already
        keys = st.text(max_size=8) if not holder else st.sampled_from(sorted(holder)) | st.text(max_size=8)
        key = draw(keys)
        holder[key] = draw(JSON_VALUES)
    return raw


def target_config_fields(raw: dict, workdir: Path) -> None:
    def parse_and_build() -> None:
        cfg = Config.from_dict(raw)
        import torch

        with torch.device("meta"):
            DeepAutoDNN(cfg.model)

    _record(parse_and_build)


_TINY = Config(model=ModelConfig(encoder_channels=(4,), encoder_pool=(True,), dnn_hidden=(8,)))


def weights_samples() -> list[bytes]:
    path = Path(tempfile.mkdtemp()) / "w.safetensors"
    save_weights(path, DeepAutoDNN(_TINY.model))
    return [path.read_bytes()]


def target_weights(data: bytes, workdir: Path) -> None:
    from deepautodnn.utils.files import write_with_checksum

    path = workdir / "w.safetensors"
    write_with_checksum(path, data)  # a checksum that matches: only the parser stands guard
    _record(lambda: load_weights(path, DeepAutoDNN(_TINY.model)))


TARGETS = {
    "idx": (target_idx, idx_samples),
    "image": (target_image, image_samples),
    "csv": (target_csv, csv_samples),
    "imagefolder": (target_imagefolder, image_samples),
    "config": (target_config, config_samples),
    "weights": (target_weights, weights_samples),
    "config-fields": (target_config_fields, None),  # structured: valid JSON, wrong values
}


def cap_memory() -> None:
    """Cap the address space at what the process maps now plus MEMORY_HEADROOM."""
    with open("/proc/self/status") as f:
        vm_size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = vm_size + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:  # the cap must bite, or the memory property means nothing
        bytearray(MEMORY_HEADROOM + 2**30)
    except MemoryError:
        return
    raise SystemExit("the address-space cap did not stop a large allocation")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("examples", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    target, make_samples = TARGETS[args.target]
    inputs = config_dicts() if make_samples is None else fuzzed(make_samples())
    workdir = Path(tempfile.mkdtemp(prefix=f"fuzz-{args.target}-"))
    import torch

    torch.set_num_threads(1)
    DeepAutoDNN(_TINY.model)  # warm up torch's lazy setup before the cap, so it doesn't count
    cap_memory()

    def hung(signum, frame):
        raise TimeoutError(f"a case ran past the hard limit of {HARD_LIMIT_S} s")

    signal.signal(signal.SIGALRM, hung)

    @seed(args.seed)
    @settings(
        max_examples=args.examples,
        deadline=DEADLINE_MS,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def run(data) -> None:
        outcomes["cases"] += 1
        signal.alarm(HARD_LIMIT_S)  # a hang is stopped and reported as this case's failure
        try:
            target(data, workdir)
        finally:
            signal.alarm(0)

    start = time.perf_counter()
    run()
    cases = outcomes.pop("cases")
    print(
        json.dumps(
            {
                "target": args.target,
                "cases": cases,
                "seed": args.seed,
                "outcomes": dict(outcomes),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
