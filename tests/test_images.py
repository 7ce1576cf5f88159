"""Image cleaning: safe open, EXIF, modes, resize (with JPEG draft), redaction, encoding, write-once, hashing."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converters.boxes import Box
from converters.errors import ImageError
from converters.images import (
    ImageOptions,
    encode_image,
    fit_size,
    open_image,
    perceptual_hash,
    prepare_image,
    redact,
    write_once,
)
from converters.samples import draw_shapes, encode, exif_rotated_jpeg


def quadrants(width: int = 400, height: int = 200) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right: orientation is visible."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height // 2))
    image.paste((0, 255, 0), (width // 2, 0, width, height // 2))
    image.paste((0, 0, 255), (0, height // 2, width // 2, height))
    return image


def colour_at(image: Image.Image, x: float, y: float) -> tuple[int, ...]:
    pixel = image.getpixel((int(x * image.width), int(y * image.height)))
    assert isinstance(pixel, tuple)
    return tuple(round(c / 64) * 64 for c in pixel)  # tolerate JPEG


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_exif_orientation_is_applied_before_anything_else() -> None:
    data = exif_rotated_jpeg(quadrants(400, 200))
    stored = Image.open(io.BytesIO(data))
    assert stored.size == (200, 400)  # pixels are stored turned
    prepared = prepare_image(data, source="phone.jpg", options=ImageOptions(max_side=0))
    assert (prepared.source_width, prepared.source_height) == (400, 200)
    assert prepared.exif_transposed and not prepared.resized
    assert colour_at(prepared.image, 0.25, 0.25) == (256, 0, 0)
    assert colour_at(prepared.image, 0.75, 0.25) == (0, 256, 0)
    assert colour_at(prepared.image, 0.25, 0.75) == (0, 0, 256)


def test_exif_can_be_ignored() -> None:
    data = exif_rotated_jpeg(quadrants(400, 200))
    prepared = prepare_image(data, source="phone.jpg", options=ImageOptions(max_side=0, exif_transpose=False))
    assert prepared.image.size == (200, 400) and not prepared.exif_transposed


def test_a_rotated_jpeg_is_drafted_and_resized_in_its_displayed_orientation() -> None:
    data = exif_rotated_jpeg(quadrants(4000, 2000))
    prepared = prepare_image(data, source="big.jpg", options=ImageOptions(max_side=500))
    assert prepared.image.size == (500, 250)
    assert (prepared.source_width, prepared.source_height) == (4000, 2000)
    assert prepared.scale == (0.125, 0.125)
    assert colour_at(prepared.image, 0.75, 0.25) == (0, 256, 0)


@pytest.mark.parametrize(
    ("make", "mode"),
    [
        (lambda: encode(quadrants().convert("CMYK"), "JPEG", quality=95), "CMYK"),
        (lambda: encode(quadrants().convert("RGBA"), "PNG"), "RGBA"),
        (lambda: encode(quadrants().convert("L"), "PNG"), "L"),
        (
            lambda: encode(quadrants().convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG", transparency=0),
            "P",
        ),
        (
            lambda: encode(Image.fromarray((np.arange(200 * 400, dtype=np.uint16) % 65535).reshape(200, 400)), "PNG"),
            "I;16",
        ),
    ],
)
def test_other_modes_become_rgb(make: object, mode: str) -> None:
    prepared = prepare_image(make(), source="x", options=ImageOptions())  # type: ignore[operator]
    assert prepared.image.mode == "RGB"
    assert prepared.converted_from == mode


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    prepared = prepare_image(encode(image, "PNG"), source="x", options=ImageOptions())
    assert prepared.image.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [((4000, 3000), 1024, (1024, 768)), ((300, 900), 600, (200, 600)), ((800, 600), 1024, (800, 600)), ((5000, 10), 1000, (1000, 2)), ((640, 480), 0, (640, 480))],
)  # fmt: skip
def test_resize_keeps_the_aspect(size: tuple[int, int], max_side: int, expected: tuple[int, int]) -> None:
    assert fit_size(*size, max_side) == expected


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_prepared_images_fit_max_side_and_keep_the_format_family(fmt: str) -> None:
    image, _ = draw_shapes(1500, 1000, np.random.default_rng(1))
    prepared = prepare_image(encode(image, fmt), source="x", options=ImageOptions(max_side=600))
    assert prepared.image.size == (600, 400) and prepared.resized
    assert prepared.output_format == fmt


def test_draft_decoding_gives_the_same_size_and_nearly_the_same_pixels() -> None:
    image, _ = draw_shapes(3000, 2000, np.random.default_rng(2))
    data = encode(image, "JPEG", quality=92)
    fast = prepare_image(data, source="x", options=ImageOptions(max_side=500)).image
    full = prepare_image(data, source="x", options=ImageOptions(max_side=500, draft=False)).image
    assert fast.size == full.size == (500, 333)
    difference = np.abs(np.asarray(fast, dtype=np.int16) - np.asarray(full, dtype=np.int16))
    assert float(difference.mean()) < 3.0


@pytest.mark.parametrize(
    ("data", "options", "reason", "message"),
    [
        (b"", ImageOptions(), "image_empty", "image cat.png: empty file (0 bytes)"),
        (b"<html>login</html>", ImageOptions(), "image_not_an_image", "image cat.png: not an image (Pillow cannot identify it)"),
        # zero-size: Pillow refuses to identify a 0-pixel-wide image at all
        (png_header_only(0, 10), ImageOptions(), "image_not_an_image", "image cat.png: not an image (Pillow cannot identify it)"),
        (encode(quadrants(400, 200), "PNG"), ImageOptions(max_pixels=50_000), "image_too_large",
         "image cat.png: 400x200 = 80,000 pixels is more than max_image_pixels (50,000); decompression-bomb guard"),
        (png_header_only(30_000, 30_000), ImageOptions(), "image_too_large",
         "image cat.png: too many pixels (Image size (900000000 pixels) exceeds limit of 178956970 pixels, could be decompression bomb DOS attack.)"),
        (encode(draw_shapes(400, 300, np.random.default_rng(0))[0], "JPEG")[:-2000], ImageOptions(), "image_truncated", None),
        (png_header_only(64, 64), ImageOptions(), "image_truncated", None),
    ],
)  # fmt: skip
def test_unusable_images_raise_image_error_with_a_reason(
    data: bytes, options: ImageOptions, reason: str, message: str | None
) -> None:
    with pytest.raises(ImageError) as info:
        prepare_image(data, source="cat.png", options=options)
    assert info.value.reason == reason
    if message is not None:
        assert str(info.value) == message
    else:
        assert str(info.value).startswith("image cat.png: truncated or corrupt: ")


def test_open_image_reads_only_the_header() -> None:
    image = open_image(png_header_only(5000, 4000), source="x", max_pixels=80_000_000)
    assert image.size == (5000, 4000)  # 20 Mpx declared, nothing decoded, no error yet


@pytest.mark.parametrize("mode", ["pixelate", "blur", "fill"])
def test_redaction_changes_only_the_boxes(mode: str) -> None:
    image, _ = draw_shapes(300, 200, np.random.default_rng(3))
    before = np.asarray(image).copy()
    box = Box(50, 40, 150, 120)
    assert redact(image, [box, Box(400, 400, 500, 500)], mode) == 1  # the second box is outside the image
    after = np.asarray(image)
    inside = (slice(40, 120), slice(50, 150))
    assert not np.array_equal(before[inside], after[inside])
    mask = np.ones(before.shape[:2], bool)
    mask[inside] = False
    assert np.array_equal(before[mask], after[mask])
    if mode == "fill":
        assert after[inside].max() == 0


def test_encoded_images_carry_no_metadata_and_are_written_once(tmp_path: Path) -> None:
    data = exif_rotated_jpeg(quadrants())
    prepared = prepare_image(data, source="x", options=ImageOptions())
    encoded = encode_image(prepared.image, "JPEG", ImageOptions())
    assert not Image.open(io.BytesIO(encoded)).getexif()
    digest, path = write_once(tmp_path, encoded, "JPEG")
    assert path == tmp_path / f"{digest}.jpg" and path.read_bytes() == encoded
    mtime = path.stat().st_mtime_ns
    assert write_once(tmp_path, encoded, "JPEG") == (digest, path)
    assert path.stat().st_mtime_ns == mtime
    assert list(tmp_path.iterdir()) == [path]


def test_perceptual_hash_survives_re_encoding_and_tells_images_apart() -> None:
    image, _ = draw_shapes(800, 600, np.random.default_rng(4))
    other, _ = draw_shapes(800, 600, np.random.default_rng(5))
    resaved = Image.open(io.BytesIO(encode(image.resize((790, 590)), "JPEG", quality=60))).convert("RGB")
    same = bin(perceptual_hash(image) ^ perceptual_hash(resaved)).count("1")
    different = bin(perceptual_hash(image) ^ perceptual_hash(other)).count("1")
    assert same <= 4 < different
