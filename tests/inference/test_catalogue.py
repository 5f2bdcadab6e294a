"""A catalogue in one command: sources, the three output formats, resume after a kill, decoding
workers, bounded memory, error rows, and the same answers as `predict`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepautodnn import cli
from deepautodnn.inference import catalogue
from deepautodnn.inference.catalogue import classify_catalogue, prepared_inputs
from deepautodnn.inference.catalogue_output import (
    COLUMNS,
    JOURNAL_SUFFIX,
    CatalogueOutputError,
    open_output,
    read_rows,
)
from deepautodnn.inference.catalogue_sources import catalogue_paths
from deepautodnn.inference.predict import predict_files
from deepautodnn.models.serialization import load_model
from tests.helpers.photos import product_photo

FORMATS = ["csv", "jsonl", "parquet"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory, test_images):
    """40 photos in two folders, plus three files that can't be classified."""
    images, _ = test_images
    root = tmp_path_factory.mktemp("shop")
    for i in range(30):
        product_photo(images[i], root / "tops" / f"{i:03d}.jpg")
    for i in range(30, 40):
        product_photo(images[i], root / "shoes" / "new" / f"{i:03d}.jpg")
    (root / "tops" / "broken.jpg").write_bytes(b"not an image")
    (root / "tops" / "empty.png").write_bytes(b"")
    (root / "shoes" / "notes.txt").write_text("not an image name, never listed")
    return root


def good_files(rows):
    return {r["file"] for r in rows if r["error"] is None}


def test_sources_folder_glob_and_manifests(shop, tmp_path):
    from_folder = list(catalogue_paths([shop]))
    assert len(from_folder) == 42 and all(p.endswith((".jpg", ".png")) for p in from_folder)
    assert from_folder == list(catalogue_paths([shop])), "the order is the same every time"
    assert len(list(catalogue_paths([f"{shop}/**/*.jpg"]))) == 41
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n{shop}/tops/000.jpg\n\n{shop}/tops/001.jpg\nmissing.jpg\n")
    assert list(catalogue_paths([listing])) == [
        f"{shop}/tops/000.jpg",
        f"{shop}/tops/001.jpg",
        str(tmp_path / "missing.jpg"),
    ]
    with_header = tmp_path / "with_header.csv"
    with_header.write_text(f"sku,path\n1,{shop}/tops/000.jpg\n2,{shop}/tops/002.jpg\n")
    assert list(catalogue_paths([with_header])) == [f"{shop}/tops/000.jpg", f"{shop}/tops/002.jpg"]
    headerless = tmp_path / "headerless.csv"
    headerless.write_text(f"{shop}/tops/000.jpg,1\n{shop}/tops/003.jpg,2\n")
    assert list(catalogue_paths([headerless])) == [f"{shop}/tops/000.jpg", f"{shop}/tops/003.jpg"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_writes_all_rows_then_a_rerun_skips_them(shop, tiny_run, tmp_path, fmt):
    out = tmp_path / f"labels.{fmt}"
    first = classify_catalogue(tiny_run[0], [shop], out, workers=0, batch_size=16, progress=False)
    assert (first.classified, first.errors, first.skipped) == (40, 2, 0)
    rows = read_rows(out)
    assert len(rows) == 42 and set(rows[0]) == set(COLUMNS)
    errors = {Path(r["file"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"broken.jpg", "empty.png"} and "broken.jpg" in errors["broken.jpg"]
    good = [r for r in rows if r["error"] is None]
    assert all(isinstance(r["unknown"], bool) and r["unknown_score"] >= 0 for r in good)
    assert all(len(r["top_k"]) == 3 and r["top_k"][0]["label"] == r["label"] for r in good)

    again = classify_catalogue(tiny_run[0], [shop], out, workers=0, progress=False)
    assert (again.classified, again.errors, again.skipped) == (0, 0, 42)
    assert read_rows(out) == rows, "a finished catalogue is left as it was"

    product_photo(np.zeros((28, 28), np.uint8) + 200, shop / "tops" / f"zz-added-{fmt}.jpg")
    try:
        more = classify_catalogue(tiny_run[0], [shop], out, workers=0, progress=False)
    finally:
        (shop / "tops" / f"zz-added-{fmt}.jpg").unlink()
    assert (more.classified, more.skipped) == (1, 42)
    assert len(read_rows(out)) == 43 and not out.with_name(out.name + JOURNAL_SUFFIX).exists()


def test_same_answers_as_predict_and_across_workers(shop, tiny_run, tmp_path):
    local = classify_catalogue(tiny_run[0], [shop], tmp_path / "w0.jsonl", workers=0, progress=False)
    pooled = classify_catalogue(tiny_run[0], [shop], tmp_path / "w2.jsonl", workers=2, batch_size=7, progress=False)
    assert local.classified == pooled.classified == 40
    by_file = {r["file"]: r for r in read_rows(tmp_path / "w0.jsonl")}
    pooled_rows = {r["file"]: r for r in read_rows(tmp_path / "w2.jsonl")}
    assert pooled_rows.keys() == by_file.keys()
    for name, row in by_file.items():  # other batch sizes: the same answers, to float32 rounding
        other = pooled_rows[name]
        assert (other["label"], other["unknown"], other["error"]) == (row["label"], row["unknown"], row["error"])
        if row["error"] is None:
            assert other["probability"] == pytest.approx(row["probability"], abs=1e-5)

    from deepautodnn.inference.ood import UnknownDetector

    report = predict_files(
        load_model(tiny_run[0]), sorted(good_files(by_file.values())), detector=UnknownDetector.load(tiny_run[0])
    )
    assert len(report.predictions) == 40
    for p in report.predictions:
        row = by_file[p["file"]]
        assert row["label"] == p["label"] and row["unknown"] == p["unknown"]
        assert row["probability"] == pytest.approx(p["probability"], abs=1e-5)
        assert row["unknown_score"] == pytest.approx(p["unknown_score"], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_torn_last_line_is_cut_and_its_file_classified_again(shop, tiny_run, tmp_path, fmt):
    out = tmp_path / f"labels.{fmt}"
    classify_catalogue(tiny_run[0], [shop / "tops"], out, workers=0, progress=False)
    data = out.read_bytes()
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    out.write_bytes(data[: last_line_start + 10])  # as a kill in the middle of a write leaves it
    summary = classify_catalogue(tiny_run[0], [shop / "tops"], out, workers=0, progress=False)
    assert summary.classified + summary.errors == 1 and summary.skipped == 31
    rows = read_rows(out)
    assert len(rows) == 32 and len({r["file"] for r in rows}) == 32


def test_parquet_keeps_a_valid_file_while_a_run_is_cut_short(shop, tiny_run, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "labels.parquet"
    classify_catalogue(tiny_run[0], [shop / "shoes"], out, workers=0, progress=False)
    before = pq.read_table(out).num_rows
    output = open_output(out)  # a run that dies after writing one batch, before closing
    output.write([{**read_rows(out)[0], "file": "elsewhere.jpg"}])
    assert pq.read_table(out).num_rows == before, "the Parquet file is the previous complete one"
    assert "elsewhere.jpg" in open_output(out).done, "the journal's rows count as done on a rerun"


def test_decoding_runs_a_bounded_number_of_paths_ahead(shop, monkeypatch):
    monkeypatch.setattr(catalogue, "CHUNK", 2)
    handed_out = []

    def paths():
        for p in catalogue_paths([shop]):
            handed_out.append(p)
            yield p

    prepared = prepared_inputs(paths(), 28, workers=1)
    next(prepared)
    ahead = 1 * catalogue.CHUNKS_IN_FLIGHT_PER_WORKER * 2
    assert len(handed_out) <= ahead + 2, f"{len(handed_out)} paths taken before the first result"
    assert len(list(prepared)) == 41


def test_an_output_that_is_not_a_catalogue_is_refused_untouched(shop, tiny_run, tmp_path):
    theirs = tmp_path / "prices.csv"
    theirs.write_text("sku,price\n1,9.99\n")
    with pytest.raises(CatalogueOutputError, match="prices.csv.*not a catalogue output"):
        classify_catalogue(tiny_run[0], [shop], theirs, workers=0, progress=False)
    assert theirs.read_text() == "sku,price\n1,9.99\n"
    with pytest.raises(CatalogueOutputError, match="must end in .parquet, .csv or .jsonl"):
        classify_catalogue(tiny_run[0], [shop], tmp_path / "labels.xlsx", workers=0, progress=False)


def test_cli_catalogue_mode(shop, tiny_run, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    code = cli.main(["predict", str(tiny_run[0]), str(shop), "--out", str(out), "--workers", "0", "--no-progress"])
    assert code == 1, "two files could not be read: every row is written, and the status says so"
    assert "40 classified (" in capsys.readouterr().err
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == 42
    assert cli.main(["predict", str(tiny_run[0]), str(shop), "--workers", "2"]) == 2
    assert "--workers and --engine go with --out" in capsys.readouterr().err


def group_gone_but(pgid: int, within_s: float) -> bool:
    """Whether every process of group `pgid` but its (zombie) leader ends within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        members = []
        for entry in os.listdir("/proc"):
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if entry.isdigit() and int(entry) != pgid and int(fields[2]) == pgid:
                members.append(entry)
        if not members:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_mid_run_loses_at_most_a_batch_and_the_rerun_completes(tiny_run, tmp_path, test_images, workers):
    """A real `deepautodnn predict --out` process killed with SIGKILL once some rows are written;
    its decoding workers end with it instead of waiting for tasks for ever."""
    images, _ = test_images
    n = 400  # a batch of one image takes milliseconds: enough of them that the kill lands part way
    for i in range(n):
        product_photo(images[i], tmp_path / "photos" / f"{i:04d}.jpg")
    out = tmp_path / "labels.jsonl"
    command = [sys.executable, "-m", "deepautodnn", "predict", str(tiny_run[0]), str(tmp_path / "photos")]
    command += ["--out", str(out), "--workers", str(workers), "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 5):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    time.sleep(3)  # not reaped yet: a zombie, as under a supervisor still reading its pipes
    assert group_gone_but(proc.pid, within_s=10), "worker processes outlived the killed command"
    proc.wait()
    written = [json.loads(line) for line in out.read_text().splitlines()]  # every complete line parses
    assert 5 <= len(written) < n, "killed part way"
    assert subprocess.run(command, stderr=subprocess.DEVNULL).returncode == 0
    rows = read_rows(out)
    assert len(rows) == n and len({r["file"] for r in rows}) == n
    assert {r["file"]: r["label"] for r in rows}.items() >= {r["file"]: r["label"] for r in written}.items()
