"""The catalogue on Ray Data: the same rows as the local engine, on a local Ray with 2 CPUs."""

from __future__ import annotations

import os

import pytest

from deepautodnn.inference.catalogue import classify_catalogue
from deepautodnn.inference.catalogue_output import read_rows
from tests.helpers.photos import product_photo

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'deepautodnn[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    from deepautodnn.inference.ray_engine import RayEngineError, start_ray

    address = os.environ.pop("RAY_ADDRESS", None)  # a local Ray with 2 CPUs, never a user's cluster
    try:
        start_ray(cpus=2)
    except RayEngineError as err:  # no shared memory, no ports: this machine can't run Ray
        pytest.skip(f"Ray cannot start here: {err}")
    finally:
        if address is not None:
            os.environ["RAY_ADDRESS"] = address
    yield
    ray.shutdown()


def test_ray_gives_the_same_rows_as_the_local_engine(local_ray, tiny_run, tmp_path, test_images):
    from deepautodnn.inference.ray_engine import classify_catalogue_ray

    images, _ = test_images
    for i in range(24):
        product_photo(images[i], tmp_path / "photos" / f"{i:03d}.jpg")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    sources = [tmp_path / "photos", tmp_path / "missing.jpg"]
    classify_catalogue(tiny_run[0], sources, tmp_path / "local.parquet", workers=0, progress=False)
    summary = classify_catalogue_ray(tiny_run[0], sources, tmp_path / "ray.parquet", batch_size=8, progress=False)
    assert (summary.classified, summary.errors) == (24, 2)
    local = {r["file"]: r for r in read_rows(tmp_path / "local.parquet")}
    on_ray = {r["file"]: r for r in read_rows(tmp_path / "ray.parquet")}
    assert on_ray.keys() == local.keys()
    for name, row in local.items():
        assert on_ray[name]["label"] == row["label"] and on_ray[name]["error"] == row["error"]
        assert on_ray[name]["unknown"] == row["unknown"]
        if row["error"] is None:
            assert on_ray[name]["probability"] == pytest.approx(row["probability"], abs=1e-5)
            assert on_ray[name]["unknown_score"] == pytest.approx(row["unknown_score"], rel=1e-4, abs=1e-5)
    again = classify_catalogue_ray(tiny_run[0], sources, tmp_path / "ray.parquet", progress=False)
    assert again.skipped == 26 and again.classified == 0, "resumes like the local engine"


def test_the_predictor_class_runs_a_ray_data_pipeline(local_ray, tiny_run, tmp_path, test_images):
    """The documented recipe: read_binary_files -> map_batches(DeepAutoDNNPredictor) -> write_parquet."""
    import pyarrow.parquet as pq

    from deepautodnn.inference.ray_engine import DeepAutoDNNPredictor

    images, labels = test_images
    for i in range(8):
        product_photo(images[i], tmp_path / "photos" / f"{i}.jpg")
    ds = ray.data.read_binary_files(str(tmp_path / "photos"), include_paths=True)
    ds = ds.map_batches(
        DeepAutoDNNPredictor, fn_constructor_kwargs={"model": str(tiny_run[0])}, concurrency=1, batch_size=4
    )
    ds.write_parquet(str(tmp_path / "labels"))
    rows = pq.read_table(tmp_path / "labels").to_pylist()
    assert len(rows) == 8 and all(r["error"] is None and r["label"] for r in rows)
