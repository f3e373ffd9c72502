"""Client images: decoded when sound, refused with a 400 naming the parameter otherwise."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from starchart.errors import BadRequest
from starchart.vision.images import decode_data_uri, is_image_data_uri, open_image, set_pixel_limit

from tests.vision.helpers import encode, make_image, png_claiming_size

LIMIT = 1_000_000


def refused(data: bytes, code: str = "invalid_image") -> BadRequest:
    with pytest.raises(BadRequest) as info:
        open_image(data, param="image", max_pixels=LIMIT)
    assert info.value.code == code and info.value.param == "image"
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats_decode_to_rgb(fmt: str) -> None:
    image = open_image(encode(make_image(40, 30, 0), fmt), param="image", max_pixels=LIMIT)
    assert image.mode == "RGB" and image.size == (40, 30)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    image = open_image(encode(Image.new(mode, (5, 4)), fmt), param="image", max_pixels=LIMIT)
    assert image.mode == "RGB" and image.size == (5, 4)


def test_exif_orientation_is_applied() -> None:
    sideways = make_image(40, 20, 1)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = encode_with_exif(sideways, exif)
    assert open_image(buffer, param="image", max_pixels=LIMIT).size == (20, 40)


def encode_with_exif(image: Image.Image, exif: Image.Exif) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def test_not_an_image() -> None:
    error = refused(b"%PDF-1.4 definitely not pixels")
    assert "not an image" in error.message


def test_empty_file() -> None:
    assert "empty" in refused(b"").message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(fmt: str) -> None:
    data = encode(make_image(64, 64, 2), fmt)
    error = refused(data[: len(data) // 2])
    assert "truncated" in error.message or "not an image" in error.message


def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = png_claiming_size(30_000, 30_000)  # 900 megapixels in a few hundred bytes
    assert len(bomb) < 1000
    error = refused(bomb, code="image_too_large")
    assert "1,000,000 pixels" in error.message and "clip_max_image_pixels" in error.message


def test_just_over_the_limit_is_refused_and_at_the_limit_accepted() -> None:
    error = refused(encode(Image.new("RGB", (1001, 1000))), code="image_too_large")
    assert "1001x1000" in error.message
    assert open_image(encode(Image.new("RGB", (1000, 1000))), param="image",
                      max_pixels=LIMIT).size == (1000, 1000)


def test_pillow_limit_is_set_explicitly() -> None:
    before = Image.MAX_IMAGE_PIXELS
    try:
        set_pixel_limit(1234)
        assert Image.MAX_IMAGE_PIXELS == 1234
        # Pillow's own check agrees: beyond twice the limit it refuses too.
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(png_claiming_size(100, 100)))
    finally:
        Image.MAX_IMAGE_PIXELS = before


def test_data_uri_round_trip() -> None:
    data = encode(make_image(8, 8, 3))
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert is_image_data_uri(uri)
    assert decode_data_uri(uri, param="images[0]") == data


@pytest.mark.parametrize("url", ["http://127.0.0.1/cat.png", "https://example.com/a.jpg",
                                 "file:///etc/passwd", "FTP://host/x.png"])
def test_urls_are_never_fetched(url: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_data_uri(url, param="images[1]")
    assert info.value.param == "images[1]"
    assert "not fetched" in info.value.message


@pytest.mark.parametrize("text", ["cat.png", "data:image/png,rawnotbase64",
                                  "data:image/png;base64,@@@not base64@@@"])
def test_malformed_data_uris(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_data_uri(text, param="image")
    assert info.value.code == "invalid_image" and info.value.param == "image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF"])
def test_corrupted_bytes_give_an_image_or_a_400_never_anything_else(fmt: str) -> None:
    import numpy as np

    original = encode(make_image(48, 32, 9), fmt)
    rng = np.random.default_rng(0)
    for _ in range(40):
        data = bytearray(original)
        for at in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            data[at] = int(rng.integers(0, 256))
        try:
            image = open_image(bytes(data), param="image", max_pixels=LIMIT)
        except BadRequest as exc:
            assert exc.param == "image"
        else:
            assert image.mode == "RGB"
