"""`POST /v1/similar` of a service started with a catalogue index: neighbours, thumbnails, the
unknown note, the 4xx answers, and `serve --index` refusing an index of another model."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
from PIL import Image

warnings.filterwarnings("ignore", message=".*httpx.*")  # starlette's TestClient notice
from fastapi.testclient import TestClient  # noqa: E402

from deepautodnn import cli  # noqa: E402
from deepautodnn.serve.app import create_app  # noqa: E402
from deepautodnn.serve.thumbnails import THUMBNAIL_SIDE  # noqa: E402

pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install -e .[search])")


@pytest.fixture(scope="module")
def client(search_catalogue):
    _, _, index = search_catalogue
    with TestClient(create_app("fashion-mnist", index=index, load_in_background=False)) as c:
        yield c


def upload(path, name="query.jpg"):
    return [("files", (name, path.read_bytes(), "image/jpeg"))]


def test_model_info_says_what_the_index_holds(client):
    info = client.get("/v1/model").json()
    assert info["similar"] == {"items": 60, "kind": "exact", "space": "penultimate", "dim": 256, "params": {}}


def test_a_catalogue_photo_finds_itself_first_with_thumbnails(client, search_catalogue):
    shop, _, _ = search_catalogue
    r = client.post("/v1/similar?k=5&thumbnails=true", files=upload(shop / "012.jpg"))
    assert r.status_code == 200
    (result,) = r.json()["results"]
    assert result["query"]["file"] == "query.jpg" and result["note"] is None
    first = result["neighbours"][0]
    assert first["file"] == str(shop / "012.jpg") and first["score"] > 0.999 and len(result["neighbours"]) == 5
    for n in result["neighbours"]:
        thumb = Image.open(io.BytesIO(base64.b64decode(n["thumbnail_jpeg"])))
        assert thumb.format == "JPEG" and max(thumb.size) == THUMBNAIL_SIDE
    plain = client.post("/v1/similar?k=5", files=upload(shop / "012.jpg")).json()["results"][0]
    assert "thumbnail_jpeg" not in plain["neighbours"][0], "thumbnails only when asked for"
    same = client.post("/v1/similar?k=5&same_class=true", files=upload(shop / "012.jpg")).json()["results"][0]
    assert {n["label"] for n in same["neighbours"]} == {same["query"]["label"]}


def test_an_unknown_upload_gets_the_note(client):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(buf, "PNG")
    r = client.post("/v1/similar", files=[("files", ("noise.png", buf.getvalue(), "image/png"))])
    (result,) = r.json()["results"]
    assert (
        result["query"]["unknown"] is True
        and result["neighbours"] == []
        and "not look like a garment" in result["note"]
    )


@pytest.mark.parametrize(
    "query, status, message",
    [("k=0", 422, "k must be between"), ("k=101", 422, "k must be between"), ("k=3", 422, "no images")],
)
def test_bad_similar_requests_are_4xx(client, query, status, message):
    r = client.post(f"/v1/similar?{query}", files=[("other", ("a.txt", b"x", "text/plain"))])
    assert r.status_code == status and message in r.json()["detail"]


def test_without_an_index_the_route_says_how_to_get_one(tiny_run, test_images):
    with TestClient(create_app(tiny_run[0], load_in_background=False)) as c:
        assert c.get("/v1/model").json().get("similar") is None
        r = c.post("/v1/similar", files=[("files", ("a.png", b"x", "image/png"))])
        assert r.status_code == 404 and "--index" in r.json()["detail"]


def test_serve_refuses_an_index_of_another_model(tiny_run, search_catalogue, capsys, tmp_path):
    _, _, index = search_catalogue
    assert cli.main(["serve", str(tiny_run[0]), "--index", str(index)]) == 2
    assert "another model" in capsys.readouterr().err
    assert cli.main(["serve", "fashion-mnist", "--index", str(tmp_path / "missing.index")]) == 2
    assert "no such index" in capsys.readouterr().err


def test_a_thumbnail_of_a_vanished_file_is_null_not_an_error(tmp_path):
    from deepautodnn.serve.thumbnails import thumbnail_base64

    assert thumbnail_base64(str(tmp_path / "gone.jpg")) is None
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    assert thumbnail_base64(str(tmp_path / "junk.jpg")) is None
