"""The one preprocessing path: every image mode, EXIF, inversion, transparency, limits, bad files;
the backdrop model on synthetic photos (gradient, texture, vignette, shadow, dark, colour); the
evidence; the `preprocess` command."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import deepautodnn.data.preprocess as pp
from deepautodnn.data.preprocess import EVIDENCE_KEYS, ImageError, Preprocessed, load_image, load_preprocessed


def expected_block() -> np.ndarray:
    """A 2:1 bright block fitted to 28x28: full height, 14 wide, centred."""
    out = np.zeros((28, 28), np.uint8)
    out[:, 7:21] = 255
    return out


def product_photo(mode: str, size=(300, 200), block=(40, 80, 80, 160)) -> Image.Image:
    """A dark 40x80 block (the 'garment') on a white background (or a transparent one)."""
    left, top, right, bottom = block
    gray = np.full(size[::-1], 255, np.uint8)
    gray[top:bottom, left:right] = 0
    img = Image.fromarray(gray)
    if mode in ("RGBA", "LA"):
        alpha = np.zeros(size[::-1], np.uint8)
        alpha[top:bottom, left:right] = 255
        img = Image.merge("LA", (img, Image.fromarray(alpha)))
        return img if mode == "LA" else img.convert("RGBA")
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)  # 16-bit: white is 65535
    if mode == "F":
        return Image.fromarray(gray.astype(np.float32) / 255.0)
    return img.convert(mode)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "PNG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("1", "PNG"),
        ("I;16", "PNG"),
        ("F", "TIFF"),
        ("CMYK", "TIFF"),
        ("RGB", "BMP"),
        ("L", "WEBP"),
    ],
)
def test_every_mode_gives_the_fashion_mnist_layout(mode, fmt):
    data = encode(product_photo(mode), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    np.testing.assert_array_equal(load_image(data, name=f"x.{fmt.lower()}"), expected_block())


def test_palette_with_transparency_counts_as_background():
    img = Image.new("P", (120, 60), 0)
    img.putpalette([255, 0, 0] + [0, 0, 0] * 255)  # index 0 red (transparent), index 1 black
    img.paste(1, (40, 10, 60, 50))  # a black 20x40 block
    out = load_image(encode(img, "PNG", transparency=0))
    np.testing.assert_array_equal(out, expected_block())


def test_dark_background_is_not_inverted():
    white_on_black = Image.fromarray(255 - np.asarray(product_photo("L")))
    np.testing.assert_array_equal(load_image(encode(white_on_black)), expected_block())


def test_exif_rotation_is_applied():
    # Stored sideways (wide), with EXIF orientation 6 (rotate 90 degrees clockwise to view).
    tall = product_photo("L")
    sideways = tall.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = load_image(encode(sideways, "JPEG", quality=95, exif=exif.tobytes()))
    np.testing.assert_array_equal(out > 127, expected_block() > 127)


def test_animated_gif_uses_the_first_frame():
    first = product_photo("L")
    second = Image.new("L", first.size, 0)
    data = encode(first, "GIF", save_all=True, append_images=[second])
    np.testing.assert_array_equal(load_image(data), expected_block())


def test_fashion_mnist_arrays_round_trip_exactly(data_dir):
    from deepautodnn.data.fashion_mnist import load_fashion_mnist

    images, _ = load_fashion_mnist("test", data_dir)
    for arr in images[:20]:
        np.testing.assert_array_equal(load_image(encode(Image.fromarray(arr))), arr)


def test_preprocessing_steps_end_in_the_model_input():
    steps = dict(pp.preprocessing_steps(product_photo("RGB")))
    assert list(steps)[-1] == "model input"
    assert steps["trimmed"].shape == (80, 40)  # trimmed to the block, at full resolution
    assert all(a.dtype == np.uint8 for a in steps.values())
    np.testing.assert_array_equal(steps["model input"], expected_block())


# ---- the backdrop model on synthetic photos -----------------------------------------------------

H, W = 72, 96  # within WORK_SIDE, so the working image is the photo itself
TRUTH = (18, 54, 28, 68)  # the object's box: top, bottom (exclusive), left, right (exclusive)


def garment_mask() -> np.ndarray:
    """A shirt-like shape filling TRUTH exactly: a body, two sleeves and a neck cut-out."""
    top, bottom, left, right = TRUTH
    m = np.zeros((H, W), bool)
    m[top:bottom, left + 10 : right - 10] = True  # body
    m[top : top + 17, left:right] = True  # sleeves
    m[top : top + 4, left + 15 : right - 15] = False  # neck
    return m


def photo(backdrop: np.ndarray, colour, texture: bool = True) -> np.ndarray:
    """backdrop (H, W) or (H, W, 3), with the garment painted in `colour`, lightly textured."""
    rng = np.random.default_rng(1)
    bg = np.repeat(backdrop[..., None], 3, 2) if backdrop.ndim == 2 else backdrop
    obj = np.broadcast_to(np.asarray(colour, np.float64), (H, W, 3)).copy()
    if texture:
        obj *= 1 + 0.08 * rng.standard_normal((H, W, 1))
    out = np.where(garment_mask()[..., None], obj, bg) + rng.normal(0, 1.5, (H, W, 3))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def ramp(lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, hi, W)[None, :] * np.ones((H, 1)) * 0.6 + np.linspace(lo, hi, H)[:, None] * 0.4


def soft_shadow_backdrop() -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    shadow = gaussian_filter(np.roll(garment_mask(), (3, 4), (0, 1)).astype(float), 3.5)
    return 225 * (1 - 0.45 * shadow)


def textured() -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2)
    blotches = gaussian_filter(rng.standard_normal((H, W)), 4)
    return 220 + 6 * blotches / blotches.std() + rng.normal(0, 3, (H, W))


def vignette() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    r2 = ((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2
    return 245 * (1 - 0.3 * r2 / 2)


SCENES = {
    "gradient": lambda: photo(ramp(160, 245), (90, 40, 40)),
    "texture": lambda: photo(textured(), (70, 90, 130)),
    "vignette": lambda: photo(vignette(), (60, 60, 60)),
    "soft shadow": lambda: photo(soft_shadow_backdrop(), (80, 80, 80)),  # a grey garment: not told by colour
    "dark backdrop": lambda: photo(ramp(20, 50), (225, 215, 200)),
    "low contrast": lambda: photo(ramp(120, 140), (80, 80, 80)),
    # red on a grey of the same luminance: invisible in grey, plain in colour
    "coloured object": lambda: photo(np.full((H, W), 0.299 * 200 + 0.587 * 60 + 0.114 * 60), (200, 60, 60)),
}


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_the_object_is_found_on_any_backdrop(scene):
    found = pp.find_object(pp.working_image(Image.fromarray(SCENES[scene]())))
    rows, cols = np.nonzero(found.mask)
    box = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    assert np.abs(np.subtract(box, TRUTH)).max() <= 2, (box, TRUTH)
    inter = (found.mask & garment_mask()).sum()
    # The shape itself, not just its box (a shadow's darkest part along the outline may stay).
    assert inter / (found.mask | garment_mask()).sum() > (0.8 if scene == "soft shadow" else 0.9)
    assert found.object_count == 1


def test_backdrop_surface_follows_a_gradient():
    img = photo(ramp(160, 245), (90, 40, 40)).astype(np.float32)
    surface = pp.surface_at(pp.fit_background(img), (H, W))
    backdrop = ~garment_mask()
    assert np.abs(surface[..., 0] - ramp(160, 245))[backdrop].max() < 3  # the garment did not bend it


@pytest.mark.parametrize("scene", ["soft shadow", "coloured object", "gradient"])
def test_model_input_is_the_object_bright_on_black(scene):
    out = pp.preprocess(Image.fromarray(SCENES[scene]()))
    img = out.image
    assert img.shape == (28, 28) and img.dtype == np.uint8 and img.max() >= 230
    rows, cols = np.nonzero(img > 12)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert height == 28 or width == 28  # the longest side fitted to 28, as Fashion-MNIST
    assert abs(width / height - 40 / 36) < 0.1  # the garment's proportions kept (40 wide, 36 tall)
    assert img[: rows.min()].max(initial=0) <= 12 and img[rows.max() + 1 :].max(initial=0) <= 12  # black above, below


# ---- evidence for unknown-input detection -------------------------------------------------------


def test_evidence_has_every_key_on_both_paths(data_dir):
    from deepautodnn.data.fashion_mnist import load_fashion_mnist

    arr = load_fashion_mnist("test", data_dir)[0][0]
    for prepared in (
        load_preprocessed(encode(Image.fromarray(arr))),
        pp.preprocess(Image.fromarray(SCENES["gradient"]())),
    ):
        assert isinstance(prepared, Preprocessed)
        assert tuple(prepared.evidence) == EVIDENCE_KEYS
        assert all(isinstance(v, float) and np.isfinite(v) for v in prepared.evidence.values())
    dataset = load_preprocessed(encode(Image.fromarray(arr))).evidence
    assert 0.2 < dataset["foreground_fraction"] < 0.9 and dataset["object_count"] == 1


def test_evidence_of_a_clean_photo_a_flat_image_and_noise():
    clean = pp.preprocess(Image.fromarray(SCENES["gradient"]())).evidence
    assert abs(clean["foreground_fraction"] - garment_mask().mean()) < 0.01
    assert clean["object_touches_border"] == 0 and clean["background_residual"] < 3

    flat = pp.preprocess(Image.new("RGB", (300, 200), (180, 170, 160))).evidence
    assert flat["foreground_fraction"] == 0 and flat["object_count"] == 0
    assert flat["high_frequency"] == 0

    rng = np.random.default_rng(0)
    noise = pp.preprocess(Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))).evidence
    assert noise["high_frequency"] > 5 * clean["high_frequency"]
    assert noise["background_residual"] > 20 * clean["background_residual"]
    # Noise is backdrop noise (no object over it) or many objects, or one that fills the frame.
    assert noise["foreground_fraction"] == 0 or noise["object_count"] > 3 or noise["object_touches_border"] > 0.2


def test_flat_image_gives_a_black_input():
    np.testing.assert_array_equal(
        load_image(encode(Image.new("RGB", (64, 48), (200, 10, 10)))), np.zeros((28, 28), np.uint8)
    )


# ---- the command -------------------------------------------------------------------------------


def test_cli_preprocess_writes_the_steps_and_the_input(tmp_path, capsys):
    import json

    from deepautodnn.cli import main

    src = tmp_path / "shot.png"
    Image.fromarray(SCENES["soft shadow"]()).save(src)
    steps, out = tmp_path / "steps.png", tmp_path / "input.png"
    assert main(["preprocess", str(src), "--steps", str(steps), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert tuple(report["evidence"]) == EVIDENCE_KEYS and report["steps"][-1] == "model input"
    with Image.open(steps) as fig:
        assert fig.format == "PNG" and fig.size[0] > 4 * fig.size[1]  # a strip of panels
    np.testing.assert_array_equal(np.asarray(Image.open(out)), load_image(src))
    assert main(["preprocess", str(tmp_path / "missing.png")]) == 2
    assert "missing.png: file not found" in capsys.readouterr().err


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds almost no data (a decompression-bomb header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty file"),
        (b"this is not an image", "not an image file"),
        (png_header_only(100_000, 100_000), "over the limit"),
        (png_header_only(20_000, 3_000), "over the limit"),
    ],
)
@pytest.mark.parametrize("loader", [load_image, load_preprocessed])
def test_bad_bytes_give_clear_errors(data, message, loader):
    with pytest.raises(ImageError, match=message) as err:
        loader(data, name="upload.png")
    assert str(err.value).startswith("upload.png: ")


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(encode(product_photo("L"))[:200])
    with pytest.raises(ImageError, match=rf"{path}: cannot decode"):
        load_image(path)


def test_file_size_limit_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(encode(product_photo("L")))
    monkeypatch.setattr(pp, "MAX_FILE_BYTES", 100)
    with pytest.raises(ImageError, match="larger than"):
        load_image(path)
    with pytest.raises(ImageError, match="larger than"):
        load_image(path.read_bytes(), name="big.png")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
