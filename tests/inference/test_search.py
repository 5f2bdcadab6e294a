"""Similar-item search: the model's search vectors, `embed` into Parquet (resume, identity), the
FAISS index (exact and IVF, the file and its checks) and `similar` (itself first, same class,
unknown queries, another model's index refused)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepautodnn import cli
from deepautodnn.inference.backends import TorchBackend
from deepautodnn.inference.catalogue_output import CatalogueOutputError, read_identity, read_rows
from deepautodnn.inference.embedding import embed_catalogue
from deepautodnn.inference.graph import InferenceGraph
from deepautodnn.inference.names import DEFAULT_SPACE
from deepautodnn.inference.similar import UNKNOWN_NOTE, SimilarFinder
from deepautodnn.inference.vector_index import (
    CatalogueIndex,
    IndexFileError,
    build_catalogue_index,
    build_faiss_index,
    exact_neighbours,
    recall_at,
)
from deepautodnn.models.serialization import load_model
from tests.helpers.photos import product_photo

pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install -e .[search])")
RESULTS = Path(__file__).parents[2] / "results"


@pytest.fixture(scope="module")
def pretrained():
    return load_model("fashion-mnist").eval()


@pytest.mark.parametrize("space", ["penultimate", "code"])
def test_embed_is_normalised_and_the_same_as_the_graphs_output(pretrained, test_images, space):
    images = test_images[0][:64]
    vectors = pretrained.embed(images, space)  # uint8 (N, 28, 28)
    assert vectors.shape == (64, pretrained.embedding_dim(space)) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(64))
    as_floats = pretrained.embed(torch.from_numpy(images).float().div(255).unsqueeze(1), space)
    torch.testing.assert_close(as_floats, vectors)
    graph = TorchBackend(InferenceGraph(pretrained)).run(images, reconstruction=False, embedding=space)
    np.testing.assert_allclose(graph.embedding, vectors.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="embedding space"):
        pretrained.embed(images, "pixels")


def test_the_default_space_is_the_better_one_in_the_benchmark():
    files = sorted(RESULTS.glob("retrieval_*.json"))
    assert files, "results/retrieval_*.json is missing: run benchmarks/retrieval.py"
    for path in files:
        result = json.loads(path.read_text())
        spaces = result["spaces"]
        better = max(("code", "penultimate"), key=lambda s: spaces[s]["precision_at_10"])
        assert result["better_model_space"] == better == DEFAULT_SPACE, path.name


def test_each_catalogue_photo_finds_itself_first(search_catalogue):
    shop, _, index = search_catalogue
    finder = SimilarFinder("fashion-mnist", index)
    photos = sorted(shop.glob("*.jpg"))
    results, errors = finder.similar_files(photos, k=3, even_if_unknown=True)
    assert not errors and len(results) == 60
    for photo, r in zip(photos, results):
        first = r["neighbours"][0]
        assert first["file"] == str(photo) and first["score"] > 0.999
        assert [n["score"] for n in r["neighbours"]] == sorted((n["score"] for n in r["neighbours"]), reverse=True)
        assert first["label"] == r["query"]["label"], "the item's stored label is the model's label for it"


def test_same_class_keeps_to_the_querys_class(search_catalogue, test_images):
    shop, _, index = search_catalogue
    finder = SimilarFinder("fashion-mnist", index)
    results, _ = finder.similar_files([shop / "000.jpg", shop / "001.jpg"], k=10, same_class=True)
    for r in results:
        assert r["neighbours"] and all(n["label"] == r["query"]["label"] for n in r["neighbours"])
    unfiltered, _ = finder.similar_files([shop / "000.jpg"], k=10)
    assert {n["label"] for n in unfiltered[0]["neighbours"]} != {results[0]["query"]["label"]}, (
        "without the filter some neighbours are of other classes (else this test shows nothing)"
    )


def test_an_unknown_query_gets_the_flag_not_neighbours(search_catalogue, tmp_path):
    _, _, index = search_catalogue
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(noise)
    finder = SimilarFinder("fashion-mnist", index)
    (result,), _ = finder.similar_files([noise], k=5)
    assert result["query"]["unknown"] is True and result["neighbours"] == [] and result["note"] == UNKNOWN_NOTE
    (anyway,), _ = finder.similar_files([noise], k=5, even_if_unknown=True)
    assert len(anyway["neighbours"]) == 5 and anyway["note"] is None


def test_exact_and_ivf_agree_on_a_small_set(pretrained, test_images):
    vectors = pretrained.embed(test_images[0][:4000]).numpy()
    database, queries = vectors[:3500], vectors[3500:]
    ivf, choice = build_faiss_index(database, kind="ivf", target_recall=0.95, seed=0)
    assert choice.kind == "ivf" and 1 <= choice.params["nprobe"] <= choice.params["nlist"]
    chosen = [p for p in choice.tradeoff if p["nprobe"] == choice.params["nprobe"]]
    assert chosen and chosen[0]["recall_at_10"] >= 0.95, "the recorded curve holds the choice"
    truth = exact_neighbours(database, queries, 10)[1]
    found = ivf.search(queries, 10)[1]
    assert recall_at(found, truth) >= 0.95, "held-out queries, not the tuning ones"
    assert (found[:, 0] == truth[:, 0]).mean() >= 0.95
    assert build_faiss_index(database, kind="auto")[1].kind == "exact", "a small catalogue gets exact search"


def test_same_class_on_ivf_finds_the_nearest_of_the_class(pretrained, test_images):
    images, labels = test_images
    vectors = pretrained.embed(images[:3000]).numpy()
    ivf, choice = build_faiss_index(vectors, kind="ivf", seed=0)
    files, classes, unknown = [f"{i}.jpg" for i in range(3000)], labels[:3000].astype(np.int32), np.zeros(3000, bool)
    queries, query_classes = vectors[:20], [int(c) for c in labels[:20]]
    narrow = CatalogueIndex(ivf, files, classes, unknown, {"params": {**choice.params, "nprobe": 1}})
    for query_class, items in zip(query_classes, narrow.search(queries, 200, query_classes)):
        assert len(items) == 200 and {labels[n["id"]] for n in items} == {query_class}, "widened until it has k"
    index = CatalogueIndex(ivf, files, classes, unknown, {"params": choice.params})
    results = index.search(queries, 20, query_classes)
    for query_class, items in zip(query_classes, results):
        assert len(items) == 20 and {labels[n["id"]] for n in items} == {query_class}
    # the same as exact search within the class, nearly always
    recalls = []
    for q, c, items in zip(queries, labels[:20], results):
        ids = np.flatnonzero(labels[:3000] == c)
        truth = ids[np.argsort(-(vectors[ids] @ q), kind="stable")[:20]]
        recalls.append(len({n["id"] for n in items} & set(truth.tolist())) / 20)
    assert np.mean(recalls) >= 0.9


def test_k_larger_than_the_catalogue_gives_every_item(search_catalogue):
    shop, _, index = search_catalogue
    (result,), _ = SimilarFinder("fashion-mnist", index).similar_files([shop / "003.jpg"], k=100, even_if_unknown=True)
    assert len(result["neighbours"]) == 60


def test_embed_needs_eval_mode(test_images):
    model = load_model("fashion-mnist").train()
    with pytest.raises(ValueError, match="eval mode"):
        model.embed(test_images[0][:2])


def test_another_models_index_is_refused(search_catalogue, tiny_run, capsys):
    shop, _, index = search_catalogue
    with pytest.raises(IndexFileError, match="another model.*different weights"):
        SimilarFinder(tiny_run[0], index)
    assert cli.main(["similar", str(tiny_run[0]), str(index), str(shop / "000.jpg")]) == 2
    assert "embed the catalogue again" in capsys.readouterr().err


def test_a_changed_or_foreign_index_file_is_refused(search_catalogue, tmp_path):
    _, vectors, index = search_catalogue
    data = bytearray(index.read_bytes())
    changed = tmp_path / "changed.index"
    changed.write_bytes(bytes(data[:-40]) + bytes(b ^ 0xFF for b in data[-40:]))
    with pytest.raises(IndexFileError, match="SHA-256 does not match"):
        CatalogueIndex.load(changed)
    (tmp_path / "cut.index").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(IndexFileError, match="not a deepautodnn index"):
        CatalogueIndex.load(tmp_path / "cut.index")
    with pytest.raises(IndexFileError, match="not a deepautodnn index"):
        CatalogueIndex.load(vectors)
    with pytest.raises(IndexFileError, match="no such index"):
        CatalogueIndex.load(tmp_path / "missing.index")


def test_embed_resumes_skips_error_rows_in_the_index_and_refuses_another_space(test_images, tmp_path):
    images, _ = test_images
    shop = tmp_path / "shop"
    for i in range(12):
        product_photo(images[i], shop / ("a" if i < 5 else "b") / f"{i:02d}.jpg")
    (shop / "b" / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "vectors.parquet"
    first = embed_catalogue("fashion-mnist", [shop / "a"], out, workers=0, progress=False)
    assert (first.classified, first.skipped) == (5, 0)
    second = embed_catalogue("fashion-mnist", [shop], out, workers=0, progress=False)
    assert (second.classified, second.errors, second.skipped) == (7, 1, 5)
    rows = read_rows(out)
    assert len(rows) == 13 and len({r["file"] for r in rows}) == 13
    assert all(len(r["vector"]) == 256 for r in rows if r["error"] is None)
    assert read_identity(out)["space"] == "penultimate"
    with pytest.raises(CatalogueOutputError, match="holds rows made by"):
        embed_catalogue("fashion-mnist", [shop], out, space="code", workers=0, progress=False)
    built = build_catalogue_index(out, tmp_path / "catalogue.index")
    assert built.meta["count"] == 12 and not any(f.endswith("broken.jpg") for f in built.files)
    assert CatalogueIndex.load(tmp_path / "catalogue.index").files == built.files
    assert json.loads((tmp_path / "catalogue.index.json").read_text()) == built.meta, "the choice, recorded beside it"


def test_embeds_vectors_are_model_embed_of_the_preprocessed_photos(search_catalogue, pretrained):
    from deepautodnn.data.preprocess import load_preprocessed

    _, vectors, _ = search_catalogue
    rows = read_rows(vectors)[:10]
    inputs = np.stack([load_preprocessed(r["file"]).image for r in rows])
    expected = pretrained.embed(inputs).numpy()
    np.testing.assert_allclose(np.array([r["vector"] for r in rows], np.float32), expected, atol=1e-6)


def test_embed_after_a_kill_resumes_from_its_journal_and_keeps_it_from_other_writers(search_catalogue, tmp_path):
    from deepautodnn.inference.catalogue_output import IDENTITY_SUFFIX, JOURNAL_SUFFIX, open_output
    from deepautodnn.inference.catalogue_output import read_rows as rows_of
    from deepautodnn.inference.embedding import Embedder

    shop, vectors, _ = search_catalogue
    done = rows_of(vectors)[:7]
    out = tmp_path / "v.parquet"
    crashed = open_output(out, identity=Embedder("fashion-mnist").identity.to_dict())
    crashed.write(done)  # a run killed after one batch: a journal and its identity, no Parquet yet
    journal = tmp_path / ("v.parquet" + JOURNAL_SUFFIX)
    assert journal.exists() and (tmp_path / ("v.parquet" + IDENTITY_SUFFIX)).exists() and not out.exists()
    with pytest.raises(CatalogueOutputError, match="holds rows made by"):
        embed_catalogue("fashion-mnist", [shop], out, space="code", workers=0, progress=False)
    with pytest.raises(CatalogueOutputError, match="holds rows made by"):  # predict would drop the vectors
        open_output(out)
    assert journal.stat().st_size > 0, "the refused writers left the journal as it was"
    summary = embed_catalogue("fashion-mnist", [shop], out, workers=0, progress=False)
    assert (summary.classified, summary.skipped) == (53, 7)
    rows = read_rows(out)
    assert len(rows) == 60 and all(len(r["vector"]) == 256 for r in rows) and not journal.exists()
    (tmp_path / ("w.parquet" + JOURNAL_SUFFIX)).write_text(json.dumps(done[0]) + "\n")
    (tmp_path / ("w.parquet" + IDENTITY_SUFFIX)).write_text("{not json")
    with pytest.raises(CatalogueOutputError, match="unreadable"):
        embed_catalogue("fashion-mnist", [shop], tmp_path / "w.parquet", workers=0, progress=False)


def test_index_build_refuses_no_vectors_and_its_own_input(search_catalogue, tmp_path):
    _, vectors, _ = search_catalogue
    with pytest.raises(IndexFileError, match="is the vectors file itself"):
        build_catalogue_index(vectors, vectors)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"no photo")
    empty = tmp_path / "empty.parquet"
    embed_catalogue("fashion-mnist", [broken], empty, workers=0, progress=False)
    with pytest.raises(IndexFileError, match="no usable vectors"):
        build_catalogue_index(empty, tmp_path / "x.index")


def test_the_docs_example_is_what_similar_prints(tmp_path, monkeypatch, capsys):
    """docs/search.md shows `similar` on the photos in examples/: the same output, not typed."""
    root = Path(__file__).parents[2]
    doc = (root / "docs" / "search.md").read_text()
    shown = doc.split("examples/shirt.jpg --k 3`):\n\n```text\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(root)
    vectors, index = tmp_path / "vectors.parquet", tmp_path / "shop.index"
    embed_catalogue("fashion-mnist", ["examples/"], vectors, workers=0, progress=False)
    build_catalogue_index(vectors, index)
    capsys.readouterr()
    assert cli.main(["similar", "fashion-mnist", str(index), "examples/shirt.jpg", "--k", "3"]) == 0
    assert capsys.readouterr().out == shown


def test_a_predict_output_is_not_a_vectors_file(tiny_run, search_catalogue, tmp_path):
    shop, _, _ = search_catalogue
    labels = tmp_path / "labels.parquet"
    shutil.copytree(shop, tmp_path / "shop")
    assert cli.main(["predict", str(tiny_run[0]), str(tmp_path / "shop"), "--out", str(labels), "--no-progress"]) == 0
    with pytest.raises(IndexFileError, match="records no model identity"):
        build_catalogue_index(labels, tmp_path / "x.index")
    with pytest.raises(CatalogueOutputError, match="holds rows made by"):
        embed_catalogue("fashion-mnist", [tmp_path / "shop"], labels, workers=0, progress=False)


def test_cli_embed_index_and_similar(search_catalogue, tmp_path, capsys):
    shop, _, _ = search_catalogue
    vectors, index = tmp_path / "v.parquet", tmp_path / "c.index"
    assert (
        cli.main(["embed", "fashion-mnist", str(shop), "--out", str(vectors), "--workers", "0", "--no-progress"]) == 0
    )
    assert "60 embedded" in capsys.readouterr().err
    assert cli.main(["index", "build", str(vectors), "--out", str(index), "--kind", "ivf"]) == 0
    assert "60 items, penultimate vectors (256 wide)" in capsys.readouterr().err
    assert cli.main(["index", "info", str(index)]) == 0
    info = capsys.readouterr().out
    assert "ivf, nlist" in info and "<- chosen" in info
    query = str(shop / "007.jpg")
    assert cli.main(["similar", "fashion-mnist", str(index), query, "--k", "4", "--format", "json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["neighbours"][0]["file"] == query and len(result["neighbours"]) == 4
    assert cli.main(["similar", "fashion-mnist", str(index), query, "--k", "2", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("query,query_label") and len(lines) == 3 and lines[1].split(",")[4] == query
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(noise)
    assert cli.main(["similar", "fashion-mnist", str(index), str(noise), "--format", "csv"]) == 0
    out = capsys.readouterr()
    header, row = csv.reader(io.StringIO(out.out))
    assert header[-1] == "note" and row[0] == str(noise) and row[2] == "true" and row[-1] == UNKNOWN_NOTE
    assert "--even-if-unknown" in out.err
    assert cli.main(["similar", "fashion-mnist", str(index), query, "--k", "0"]) == 2
    assert cli.main(["embed", "fashion-mnist", str(shop), "--out", str(tmp_path / "v.csv")]) == 2
    assert "must end in .parquet" in capsys.readouterr().err
