"""What the marks detector does with what users actually upload, including files that are no usable image."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from marks_conftest_helpers import only, page, rectangle
from PIL import Image

from converters.errors import ImageError
from converters.marks import MAX_PIXELS, detect_marks, detect_marks_in_file, open_image


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims WIDTH x HEIGHT pixels but holds almost no data: nothing of that size is allocated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def marked() -> Image.Image:
    return rectangle(page(), (100, 60, 400, 170), "#ff0000", width=3)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.png", b"these are notes, not pixels", "image '{path}': not an image (cannot identify image file)"),
        ("empty.jpg", b"", "image '{path}': not an image (cannot identify image file)"),
        ("bomb.png", png_header(20000, 20000), "image '{path}': 400000000 pixels exceeds the limit of 80000000"),
        ("big.png", png_header(9000, 9000), "image '{path}': 81000000 pixels exceeds the limit of 80000000"),
    ],
    ids=["not-an-image", "empty-file", "bomb-20000x20000", "just-over-the-limit"],
)
def test_files_that_are_no_usable_image_raise_an_error_naming_it(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        detect_marks_in_file(path)
    assert str(info.value) == message.format(path=path)
    assert isinstance(info.value, ValueError)  # the CLI's and the exporter's user-error contract


def test_a_truncated_file_raises_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    marked().save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"^image '.*cut\.png': truncated or corrupt \("):
        detect_marks_in_file(path)


def test_a_missing_file_raises_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as info:
        detect_marks_in_file(tmp_path / "gone.png")
    assert str(info.value) == f"image '{tmp_path / 'gone.png'}': no such file"


def test_the_limit_can_be_lowered_and_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "shot.png"
    marked().save(path)
    with pytest.raises(ImageError, match=r"345600 pixels exceeds the limit of 1000$"):
        open_image(path, max_pixels=1000)
    assert MAX_PIXELS == 80_000_000


@pytest.mark.parametrize("size", [(1, 1), (7, 40), (40, 3)])
def test_tiny_images_have_no_marks(size: tuple[int, int]) -> None:
    assert detect_marks(Image.new("RGB", size, "red")) == []


def test_a_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    marked().convert("CMYK").save(path, quality=92)
    assert open_image(path).mode == "CMYK"
    mark = only(detect_marks_in_file(path), "rectangle")
    assert abs(mark.bbox[0] - 100) <= 2 and abs(mark.bbox[3] - 170) <= 2


def test_a_paletted_png_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    marked().quantize(64).save(path)
    assert open_image(path).mode == "P"
    only(detect_marks_in_file(path), "rectangle")


def test_transparency_is_flattened_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    clear = Image.new("RGBA", (720, 480), (0, 0, 0, 0))
    stroke = rectangle(Image.new("RGB", (720, 480), "white"), (100, 60, 400, 170))
    clear.paste(stroke, (0, 0), Image.fromarray(((np.asarray(stroke.convert("L")) < 250) * 255).astype(np.uint8)))
    clear.save(path)
    only(detect_marks_in_file(path), "rectangle")


@pytest.mark.parametrize("mode", ["L", "1", "I;16", "LA"])
def test_greyscale_images_have_no_marks_and_do_not_fail(mode: str) -> None:
    image = marked().convert("L").convert(mode) if mode != "I;16" else Image.new("I;16", (300, 200))
    assert detect_marks(image) == []


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((50, 60, 2), np.uint8), "image array: shape (50, 60, 2) is not (h, w), (h, w, 3) or (h, w, 4)"),
        (np.zeros((5, 50, 60), np.uint8), "image array: shape (5, 50, 60) is not (h, w), (h, w, 3) or (h, w, 4)"),
        (np.zeros((50, 60, 3), np.int64), "image array: dtype int64 is not supported (use uint8, or float in [0, 1])"),
    ],
    ids=["two-channels", "channels-first", "int64"],
)
def test_unsupported_arrays_raise_an_error_saying_what_is_wrong(array: np.ndarray, message: str) -> None:
    with pytest.raises(ImageError) as info:
        detect_marks(array)
    assert str(info.value) == message


def test_float_and_rgba_arrays_are_accepted() -> None:
    rgb = np.asarray(marked())
    only(detect_marks(rgb.astype(np.float32) / 255.0), "rectangle")
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    only(detect_marks(rgba), "rectangle")
