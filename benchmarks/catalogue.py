"""A shop's catalogue through `deepautodnn predict MODEL FOLDER --out labels.parquet`: throughput,
memory as the catalogue grows, the cost of resuming after a kill -9, the same labels as `predict`,
and the Ray engine against the local one. Prints JSON.

    python benchmarks/catalogue.py fashion-mnist --n 20000 --photos /tmp/shop-photos \
        [--ray] [--compare-predict 20000] [--out results/catalogue_<cpu class>_cpu.json]

The photos are 600x500 JPEGs of Fashion-MNIST test garments (`shop_photo`): a coloured garment on
a studio sweep with its shadow, on white, or on light cloth, drawn per image from a seeded
generator; they are made once into --photos and reused. Every run is the real command in a
subprocess, timed from its start (model load and worker start-up included); memory is the
resident set of the command and its worker processes together, sampled every 0.1 s, and read
when the output holds 2,000 rows and again near the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from _emit import emit_json, provenance
from photo_variants import centred, compose, encode, hsv_colour, ramp, rgb, smooth_noise, soft_shadow, vignette

from deepautodnn.utils.runtime import machine_info

SIZE_HW = (500, 600)
EARLY_ROWS = 2000  # memory is read here, and again near the end: flat means constant in the catalogue's size


# ---- the photos -------------------------------------------------------------------------------


def shop_photo(arr: np.ndarray, rng) -> bytes:
    """A 600x500 product photo of a garment: one of three studio set-ups, drawn from `rng`."""
    alpha, side = centred(arr, rng, SIZE_HW)
    style = rng.integers(3)
    if style == 0:  # studio sweep: grey gradient, vignette, drop shadow
        level = ramp(SIZE_HW, rng, rng.uniform(175, 205), rng.uniform(225, 248)) * vignette(SIZE_HW, 0.1)
        backdrop = rgb(level, 1 + rng.uniform(-0.02, 0.02, 3).astype(np.float32))
        backdrop *= (1.0 - rng.uniform(0.35, 0.55) * soft_shadow(alpha, rng, side))[..., None]
    elif style == 1:  # seamless white
        backdrop = np.full((*SIZE_HW, 3), rng.uniform(245, 255), np.float32)
    else:  # light cloth
        level = rng.uniform(215, 240) + rng.uniform(4, 8) * smooth_noise(SIZE_HW, rng, rng.uniform(20, 60))
        backdrop = rgb(level, 1 + rng.uniform(-0.03, 0.03, 3).astype(np.float32))
    colour = hsv_colour(rng, sat=(0.0, 0.9), val=(0.15, 0.7))
    shade = ramp(SIZE_HW, rng, rng.uniform(0.75, 0.9), 1.0)
    return encode(compose(backdrop, alpha, colour, shade, noise=2.0, rng=rng), quality=90)


def _write_photo(job: tuple[int, np.ndarray, str, int]) -> None:
    index, arr, folder, seed = job
    path = Path(folder) / f"{index // 1000:03d}" / f"{index:06d}.jpg"
    path.write_bytes(shop_photo(arr, np.random.default_rng([seed, index])))


def make_photos(n: int, folder: Path, seed: int) -> float:
    """n photos under folder/NNN/, made once (a stamp file records n and seed); returns seconds."""
    stamp = folder / "photos.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {"n": n, "seed": seed}:
        return 0.0
    from deepautodnn import load_fashion_mnist

    shutil.rmtree(folder, ignore_errors=True)
    images, _ = load_fashion_mnist("test")
    for sub in range((n + 999) // 1000):
        (folder / f"{sub:03d}").mkdir(parents=True)
    start = time.perf_counter()
    with Pool() as pool:
        jobs = ((i, images[i % len(images)], str(folder), seed) for i in range(n))
        for _ in pool.imap_unordered(_write_photo, jobs, chunksize=64):
            pass
    stamp.write_text(json.dumps({"n": n, "seed": seed}))
    return time.perf_counter() - start


# ---- one run of the command, watched ------------------------------------------------------------


def tree_rss_bytes(pid: int) -> tuple[int, int]:
    """(resident bytes of pid, of pid and all its descendants)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))

    def rss(p: int) -> int:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss(p)
        stack += children.get(p, [])
    return rss(pid), total


class Watch(threading.Thread):
    """Samples the command's memory and counts the rows in its journal while it runs."""

    def __init__(self, proc: subprocess.Popen, journal: Path, kill_at_rows: int | None = None):
        super().__init__(daemon=True)
        self.proc, self.journal, self.kill_at_rows = proc, journal, kill_at_rows
        self.rows, self.offset = 0, 0
        self.peak_main = self.peak_tree = 0
        self.early = self.late = None  # (rows, main rss, tree rss)
        self.first_rows_at = None
        self.t0 = time.perf_counter()

    def count_rows(self) -> None:
        try:
            with open(self.journal, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        self.rows += data.count(b"\n")

    def run(self) -> None:
        while self.proc.poll() is None:
            self.count_rows()
            main, tree = tree_rss_bytes(self.proc.pid)
            self.peak_main, self.peak_tree = max(self.peak_main, main), max(self.peak_tree, tree)
            if self.rows and self.first_rows_at is None:
                self.first_rows_at = time.perf_counter() - self.t0
            if self.early is None and self.rows >= EARLY_ROWS:
                self.early = (self.rows, main, tree)
            if self.rows:
                self.late = (self.rows, main, tree)
            if self.kill_at_rows is not None and self.rows >= self.kill_at_rows:
                self.proc.send_signal(signal.SIGKILL)
                return
            time.sleep(0.1)


def run_command(model: str, photos: Path, out: Path, extra: list[str], kill_at_rows: int | None = None) -> dict:
    command = [sys.executable, "-m", "deepautodnn", "predict", model, str(photos), "--out", str(out)]
    command += ["--no-progress", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    watch = Watch(proc, out.with_name(out.name + ".partial.jsonl"), kill_at_rows)
    watch.start()
    _, err = proc.communicate()
    watch.join()
    seconds = time.perf_counter() - start
    mib = 2**20
    return {
        "command": " ".join(["deepautodnn", *command[3:]]),
        "returncode": proc.returncode,
        "seconds": seconds,
        "rows_seen": watch.rows,
        "first_rows_after_s": watch.first_rows_at,
        "peak_rss_mib": {"command": watch.peak_main / mib, "with_workers": watch.peak_tree / mib},
        "rss_early_mib": None
        if watch.early is None
        else {"rows": watch.early[0], "command": watch.early[1] / mib, "with_workers": watch.early[2] / mib},
        "rss_late_mib": None
        if watch.late is None
        else {"rows": watch.late[0], "command": watch.late[1] / mib, "with_workers": watch.late[2] / mib},
        "summary": err.strip().splitlines()[-1] if err.strip() else "",
    }


def labels_of(path: Path) -> dict[str, str | None]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["file", "label"])
    return dict(zip(table.column("file").to_pylist(), table.column("label").to_pylist()))


def compare_with_predict(model: str, labels: dict[str, str | None], n: int) -> dict:
    """`predict`'s own path (predict_files, in one process) on the first n files, label by label."""
    from deepautodnn import UnknownDetector, load_model, predict_files
    from deepautodnn.inference.backends import make_backend

    files = sorted(labels)[:n]
    report = predict_files(load_model(model), files, detector=UnknownDetector.load(model), backend=make_backend(model))
    theirs = {p["file"]: p["label"] for p in report.predictions}
    differ = [f for f in files if theirs.get(f) != labels[f]]
    return {"files": len(files), "differ": len(differ), "examples": differ[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model directory or pretrained name")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photos", default=os.path.join(tempfile.gettempdir(), "deepautodnn-shop-photos"))
    parser.add_argument("--workers", type=int, help="--workers for the command (default: its own)")
    parser.add_argument("--ray", action="store_true", help="also run --engine ray")
    parser.add_argument("--compare-predict", type=int, default=2000, help="files to check against predict")
    parser.add_argument("--out")
    args = parser.parse_args()

    photos = Path(args.photos)
    made_s = make_photos(args.n, photos, args.seed)
    extra = [] if args.workers is None else ["--workers", str(args.workers)]
    result = {"benchmark": "catalogue", **provenance(), "n": args.n, "seed": args.seed}
    result["photos"] = {"folder": str(photos), "size": "600x500 JPEG q90", "made_in_s": made_s}
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.parquet"
        result["full"] = run_command(args.model, photos, full, extra)
        labels = labels_of(full)
        result["full"]["rows"] = len(labels)
        result["full"]["images_per_s"] = len(labels) / result["full"]["seconds"]

        resumed = Path(tmp) / "resumed.parquet"
        killed = run_command(args.model, photos, resumed, extra, kill_at_rows=args.n // 2)
        rerun = run_command(args.model, photos, resumed, extra)
        again = labels_of(resumed)
        result["resume"] = {
            "killed": killed,
            "rerun": rerun,
            "rows": len(again),
            "same_labels_as_full_run": again == labels,
            "overhead_s": killed["seconds"] + rerun["seconds"] - result["full"]["seconds"],
        }
        if args.compare_predict:
            result["same_as_predict"] = compare_with_predict(args.model, labels, args.compare_predict)
        if args.ray:
            on_ray = Path(tmp) / "ray.parquet"
            result["ray"] = run_command(args.model, photos, on_ray, ["--engine", "ray", *extra])
            ray_labels = labels_of(on_ray)
            result["ray"]["rows"] = len(ray_labels)
            result["ray"]["images_per_s"] = len(ray_labels) / result["ray"]["seconds"]
            result["ray"]["same_labels_as_local"] = ray_labels == labels
            result["ray"]["time_vs_local"] = result["ray"]["seconds"] / result["full"]["seconds"]
    result["machine"] = machine_info()
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
