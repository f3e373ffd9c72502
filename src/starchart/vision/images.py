"""Client images -> RGB ``PIL.Image``, refusing anything unsafe or broken.

Images arrive as bytes (a multipart upload) or as ``data:`` URIs. A URL is
never fetched: the server would otherwise make requests on a client's behalf
(server-side request forgery) to whatever address the client names.

Every failure is a ``BadRequest`` naming the parameter: not an image, a
truncated file, or more pixels than ``max_pixels`` (a decompression bomb: a
small file that expands to gigabytes). The pixel count is checked from the
header, before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image, ImageFile, ImageOps

from starchart.errors import BadRequest

_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,",
                       re.IGNORECASE)


def set_pixel_limit(max_pixels: int) -> None:
    """Tell Pillow our cap too, so its own bomb check agrees with ours.

    ``Image.MAX_IMAGE_PIXELS`` is process-wide; Pillow warns above it and
    refuses above twice it. Ours refuses above it, before decoding.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    # A truncated file is an error, never an image padded with grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_image_data_uri(text: str) -> bool:
    return text[:11].lower() == "data:image/"


def decode_data_uri(uri: str, *, param: str) -> bytes:
    """The bytes of a base64 ``data:`` URI (``data:image/png;base64,...``)."""
    if re.match(r"\s*(https?|ftp|file)://", uri, re.IGNORECASE):
        raise BadRequest(
            f"{param}: image URLs are not fetched by this server (it would let a client make"
            " the server request any address); send the image itself, as a base64 data URI"
            " (data:image/png;base64,...) or a multipart file upload",
            param=param, code="invalid_image",
        )
    match = _DATA_URI.match(uri)
    if match is None:
        raise BadRequest(
            f"{param}: expected a base64 data URI such as data:image/png;base64,..."
            f" (got {uri[:32]!r}{'...' if len(uri) > 32 else ''})",
            param=param, code="invalid_image",
        )
    payload = uri[match.end():]
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{param}: the data URI's base64 payload is invalid",
                         param=param, code="invalid_image") from None


def open_image(data: bytes, *, param: str, max_pixels: int) -> Image.Image:
    """Decode ``data`` into an RGB image or raise ``BadRequest``."""
    if not data:
        raise BadRequest(f"{param}: the image is empty (0 bytes)", param=param,
                         code="invalid_image")
    # Decoders see untrusted bytes and fail in many ways (OSError, SyntaxError, struct.error,
    # IndexError, ...): every failure of theirs is the client's bad image, never a 500.
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise _too_large(param, None, max_pixels) from None
    except Exception:  # noqa: BLE001 - see above
        raise BadRequest(f"{param}: the data is not an image in a format this server reads"
                         " (PNG, JPEG, WebP, GIF, BMP, TIFF, ...)",
                         param=param, code="invalid_image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large(param, (width, height), max_pixels)
    if width < 1 or height < 1:
        raise BadRequest(f"{param}: the image has no pixels", param=param, code="invalid_image")
    try:
        # Only the first frame of an animation; phone photos stored sideways are turned
        # upright as they are shown.
        image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)
        return upright.convert("RGB")
    except Image.DecompressionBombError:
        raise _too_large(param, (width, height), max_pixels) from None
    except Exception as exc:  # noqa: BLE001 - see above
        raise BadRequest(f"{param}: the image is truncated or corrupt ({exc})",
                         param=param, code="invalid_image") from None


def _too_large(param: str, size: tuple[int, int] | None, max_pixels: int) -> BadRequest:
    got = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return BadRequest(
        f"{param}: the image is too large ({got}; the limit is {max_pixels:,} pixels,"
        " setting clip_max_image_pixels)",
        param=param, code="image_too_large",
    )
