"""The one preprocessing path: every image mode, EXIF, inversion, transparency, limits, bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import deepautodnn.preprocess as pp
from deepautodnn.preprocess import ImageError, load_image


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


@pytest.mark.parametrize("mode,fmt", [
    ("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"),
    ("I;16", "PNG"), ("F", "TIFF"), ("CMYK", "TIFF"), ("RGB", "BMP"), ("L", "WEBP"),
])
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
    from deepautodnn.data import load_fashion_mnist

    images, _ = load_fashion_mnist("test", data_dir)
    for arr in images[:20]:
        np.testing.assert_array_equal(load_image(encode(Image.fromarray(arr))), arr)


def test_preprocessing_steps_end_in_the_model_input():
    steps = pp.preprocessing_steps(product_photo("RGB"))
    assert [name for name, _ in steps] == ["grey", "dark background", "trimmed", "model input"]
    assert steps[2][1].shape == (80, 40)  # trimmed to the block
    np.testing.assert_array_equal(steps[-1][1], expected_block())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds almost no data (a decompression-bomb header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data,message", [
    (b"", "empty file"),
    (b"this is not an image", "not an image file"),
    (png_header_only(100_000, 100_000), "over the limit"),
    (png_header_only(20_000, 3_000), "over the limit"),
])
def test_bad_bytes_give_clear_errors(data, message):
    with pytest.raises(ImageError, match=message) as err:
        load_image(data, name="upload.png")
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
