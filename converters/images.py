"""Image cleaning: open safely, orient, convert, resize, redact, encode, hash, write once.

Order matters and is fixed by :func:`prepare_image`:

1. The header is read and the size checked *before* any pixel is decoded: zero-size and decompression bombs
   (more than ``max_pixels``) stop here.
2. JPEGs are decoded at a reduced scale when the target is much smaller (``Image.draft``: the DCT does the
   first halvings for free), then fully loaded; truncated or corrupt data fails here.
3. EXIF orientation is applied, so the image is the one Label Studio showed (browsers honour EXIF) and region
   percentages refer to it. Its size is the *source frame* of every box.
4. Modes become RGB: CMYK and YCbCr converted, palette/alpha composited on white, 16-bit and float scaled.
5. The longer side is brought down to ``max_side`` (aspect kept); boxes scale by ``output / source``.

Then the caller may redact regions (:func:`redact`), and :func:`encode_image` writes PNG for lossless sources
(PNG, GIF, BMP, TIFF) and JPEG otherwise, without metadata (EXIF, GPS and comments are dropped).
:func:`write_once` names the file by the sha256 of its bytes, so an image used twice is stored once.

Failures are :class:`~converters.errors.ImageError` with reasons ``image_empty``, ``image_not_an_image``,
``image_too_large`` (pixels), ``image_zero_size`` and ``image_truncated``.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from converters.boxes import Box
from converters.errors import ImageError

RedactMode = Literal["pixelate", "blur", "fill"]
OutputFormat = Literal["JPEG", "PNG"]
LOSSLESS_FORMATS = frozenset({"PNG", "GIF", "BMP", "TIFF", "PPM", "TGA"})
EXTENSIONS: dict[OutputFormat, str] = {"JPEG": "jpg", "PNG": "png"}
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
# What Pillow raises for broken pixel data (its plugins surface struct and index errors on crafted files).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """How images are cleaned.

    Attributes:
        max_side: longer side of written images in pixels (0 keeps the size).
        max_pixels: refuse images with more pixels than this (decompression-bomb guard).
        exif_transpose: apply EXIF orientation.
        draft: let JPEGs decode at a reduced scale when the target is at most half the size.
        jpeg_quality: quality of written JPEGs.
        png_compress_level: zlib level of written PNGs (1 is fast and only slightly larger).
        redact_mode: how redacted regions are hidden.
    """

    max_side: int = 1024
    max_pixels: int = 80_000_000
    exif_transpose: bool = True
    draft: bool = True
    jpeg_quality: int = 90
    png_compress_level: int = 1
    redact_mode: RedactMode = "pixelate"


@dataclass(slots=True)
class PreparedImage:
    """A decoded, oriented, RGB, resized image and what was done to it.

    Attributes:
        image: the pixels (mode RGB).
        source_width: width of the source after EXIF orientation (the frame of region percentages).
        source_height: height of the source after EXIF orientation.
        output_format: JPEG or PNG, from the source format.
        exif_transposed: EXIF orientation changed the image.
        converted_from: the source mode when it was not RGB.
        resized: the image was made smaller.
    """

    image: Image.Image
    source_width: int
    source_height: int
    output_format: OutputFormat
    exif_transposed: bool = False
    converted_from: str | None = None
    resized: bool = False

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy) from source pixels to output pixels."""
        return self.image.width / self.source_width, self.image.height / self.source_height


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the longer side is at most ``max_side`` (unchanged when it fits or 0)."""
    longer = max(width, height)
    if max_side <= 0 or longer <= max_side:
        return width, height
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def open_image(data: bytes, *, source: str, max_pixels: int) -> Image.Image:
    """Read the header of an encoded image, refusing empty data, non-images, zero size and bombs; no decoding.

    Raises:
        ImageError: see the module docstring; the message starts with ``image <source>:``.
    """
    if not data:
        raise ImageError(f"image {source}: empty file (0 bytes)", reason="image_empty")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(
            f"image {source}: not an image (Pillow cannot identify it)", reason="image_not_an_image"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {source}: too many pixels ({exc})", reason="image_too_large") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"image {source}: corrupt header: {exc}", reason="image_not_an_image") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"image {source}: zero-size image ({width}x{height})", reason="image_zero_size")
    if width * height > max_pixels:
        raise ImageError(
            f"image {source}: {width}x{height} = {width * height:,} pixels is more than max_image_pixels "
            f"({max_pixels:,}); decompression-bomb guard",
            reason="image_too_large",
        )
    return image


def prepare_image(data: bytes, *, source: str, options: ImageOptions) -> PreparedImage:
    """Steps 1-5 of the module docstring.

    Args:
        data: the encoded image.
        source: the URL or path, for messages.
        options: cleaning options.

    Raises:
        ImageError: the image cannot be used (see :func:`open_image`), or its pixel data is truncated or
            corrupt (``image_truncated``).
    """
    image = open_image(data, source=source, max_pixels=options.max_pixels)
    source_format = (image.format or "").upper()
    output_format: OutputFormat = "PNG" if source_format in LOSSLESS_FORMATS else "JPEG"
    raw_width, raw_height = image.size
    try:
        # PNG keeps EXIF after the pixel data, so reading it may decode: inside the try like the decoding itself.
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if options.exif_transpose else 1
        swaps = orientation in _SWAPPING_ORIENTATIONS
        width, height = (raw_height, raw_width) if swaps else (raw_width, raw_height)
        target = fit_size(width, height, options.max_side)
        if options.draft and source_format == "JPEG" and target != (width, height):
            image.draft(None, (target[1], target[0]) if swaps else target)
        image.load()
        transposed = False
        if options.exif_transpose and orientation != 1:
            oriented = ImageOps.exif_transpose(image)
            transposed = oriented is not image
            image = oriented
        image, converted_from = _to_rgb(image)
    except _DECODE_ERRORS as exc:
        raise ImageError(f"image {source}: truncated or corrupt: {exc}", reason="image_truncated") from None
    resized = False
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        resized = True
    return PreparedImage(
        image=image,
        source_width=width,
        source_height=height,
        output_format=output_format,
        exif_transposed=transposed,
        converted_from=converted_from,
        resized=resized,
    )


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = float(array.max()) if array.size else 0.0
        scaled = (array * (255.0 / peak)) if peak > 0 else array
        return Image.fromarray(scaled.clip(0, 255).astype(np.uint8), "L").convert("RGB"), mode
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), mode
    return image.convert("RGB"), mode


def redact(image: Image.Image, boxes: Sequence[Box], mode: RedactMode = "pixelate") -> int:
    """Hide ``boxes`` (pixels of ``image``) in place; returns how many boxes touched the image.

    ``pixelate`` leaves at most 8 blocks along a box's longer side, ``blur`` applies a Gaussian blur with a
    radius of a quarter of the longer side, ``fill`` paints the box black.
    """
    done = 0
    for box in boxes:
        clipped = box.clipped(image.width, image.height)
        if clipped is None:
            continue
        x0, y0 = int(clipped.x0), int(clipped.y0)
        x1, y1 = max(x0 + 1, int(np.ceil(clipped.x1))), max(y0 + 1, int(np.ceil(clipped.y1)))
        area = (x0, y0, x1, y1)
        width, height = x1 - x0, y1 - y0
        if mode == "fill":
            image.paste((0, 0, 0), area)
        elif mode == "blur":
            radius = max(4.0, max(width, height) / 4)
            image.paste(image.crop(area).filter(ImageFilter.GaussianBlur(radius)), area)
        else:
            block = max(1.0, max(width, height) / 8)
            small = (max(1, round(width / block)), max(1, round(height / block)))
            patch = (
                image.crop(area).resize(small, Image.Resampling.BOX).resize((width, height), Image.Resampling.NEAREST)
            )
            image.paste(patch, area)
        done += 1
    return done


def encode_image(image: Image.Image, output_format: OutputFormat, options: ImageOptions) -> bytes:
    """The image encoded as ``output_format``, without metadata."""
    buffer = io.BytesIO()
    if output_format == "JPEG":
        image.save(buffer, "JPEG", quality=options.jpeg_quality)
    else:
        image.save(buffer, "PNG", compress_level=options.png_compress_level)
    return buffer.getvalue()


def write_once(directory: Path, data: bytes, output_format: OutputFormat) -> tuple[str, Path]:
    """Store ``data`` as ``<sha256>.<ext>`` in ``directory`` unless that file exists; return (sha256, path).

    The file appears atomically (written aside, then renamed), so concurrent writers of the same image are safe.

    Raises:
        OSError: the directory is not writable (a problem with the output, not with the task).
    """
    digest = hashlib.sha256(data).hexdigest()
    path = directory / f"{digest}.{EXTENSIONS[output_format]}"
    if not path.exists():
        partial = directory / f".{digest}.{os.getpid()}.partial"
        partial.write_bytes(data)
        partial.replace(path)
    return digest, path


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (imagehash's ``phash``) of ``image`` as an int.

    The image is box-reduced to about 128 pixels first: the hash itself works at 32x32, so the result is the
    same kind of hash at a fraction of the cost.
    """
    import imagehash

    factor = max(1, max(image.size) // 128)
    small = image.reduce(factor) if factor > 1 else image
    return int(str(imagehash.phash(small)), 16)
