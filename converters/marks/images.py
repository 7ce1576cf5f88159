"""Reading an uploaded image safely and turning any image into the RGB array the detector works on.

``open_image`` checks the pixel count from the header before anything is decoded, so a decompression bomb
costs nothing; every failure becomes an :class:`~converters.errors.ImageError` whose message names the image
and what was wrong. ``as_rgb`` flattens alpha onto white and converts CMYK, paletted, greyscale and 16-bit
images, so callers never branch on the mode.
"""

from __future__ import annotations

import re
import warnings
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from converters.errors import ImageError
from converters.marks.model import RGB, Array

MAX_PIXELS = 80_000_000
"""Images with more pixels than this are refused before decoding (about 9000 x 9000)."""


def open_image(path: str | PathLike[str], *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode the image at PATH, refusing what cannot or should not be decoded.

    Args:
        path: the file; its text as given is used in error messages.
        max_pixels: refuse images with more pixels than this, checked from the header before decoding.

    Returns:
        The decoded image, in whatever mode the file has (``as_rgb`` converts it).

    Raises:
        ImageError: the file is missing, is not an image, is truncated or corrupt, or is too large; the message
            reads e.g. ``image 'x.png': not an image (cannot identify image file)``.
    """
    name = str(path)
    file = Path(path)
    if not file.is_file():
        raise ImageError(f"image {name!r}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = found.group(1) if found else "too many"
        raise ImageError(f"image {name!r}: {pixels} pixels exceeds the limit of {max_pixels}") from None
    except UnidentifiedImageError:
        raise ImageError(f"image {name!r}: not an image (cannot identify image file)") from None
    except OSError as exc:
        raise ImageError(f"image {name!r}: cannot be read ({exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(f"image {name!r}: {width * height} pixels exceeds the limit of {max_pixels}")
    if width < 1 or height < 1:
        image.close()
        raise ImageError(f"image {name!r}: empty ({width}x{height})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        image.close()
        raise ImageError(f"image {name!r}: truncated or corrupt ({exc})") from None
    return image


def as_rgb(image: Image.Image | Array) -> RGB:
    """IMAGE as a C-contiguous uint8 (height, width, 3) RGB array; transparency is composited onto white.

    Arrays may be (h, w) greyscale, (h, w, 3) RGB or (h, w, 4) RGBA, as uint8, or as float in [0, 1].

    Raises:
        ImageError: an array of another shape or dtype, or an image mode Pillow cannot convert.
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(f"image array: dtype {arr.dtype} is not supported (use uint8, or float in [0, 1])")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ImageError(f"image array: shape {arr.shape} is not (h, w), (h, w, 3) or (h, w, 4)")
    return np.ascontiguousarray(arr)


def _pil_to_rgb(image: Image.Image) -> RGB:
    mode = image.mode
    try:
        if mode == "RGB":
            rgb = image
        elif mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
        elif mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            arr = np.asarray(image, dtype=np.float64)
            top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
            grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        else:  # 1, L, P, CMYK, YCbCr, LAB, HSV
            rgb = image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ImageError(f"image in mode {mode!r}: cannot be converted to RGB ({exc})") from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
