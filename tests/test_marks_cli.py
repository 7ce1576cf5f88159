"""`labelloop marks detect IMAGE... [--json] [--draw DIR]`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from marks_conftest_helpers import arrow, page, rectangle
from PIL import Image

from ml_backend.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        result = main(argv)  # click returns the exit code of ctx.exit() (the console script exits with it)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:  # user errors: one line, exit 2
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def shots(tmp_path: Path) -> tuple[Path, Path]:
    marked = tmp_path / "marked.png"
    arrow(rectangle(page(), (100, 60, 400, 170)), (600, 420), (420, 260)).save(marked)
    clean = tmp_path / "clean.jpg"
    page().save(clean, quality=90)
    return marked, clean


def test_json_prints_one_object_per_image_and_line(
    shots: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    marked, clean = shots
    code, out, err = run(["marks", "detect", str(marked), str(clean), "--json"], capsys)
    assert (code, err) == (0, "")
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["image"] == str(marked) and (first["width"], first["height"]) == (720, 480)
    assert [m["kind"] for m in first["marks"]] == ["rectangle", "arrow"]
    box, tip = first["marks"]
    assert set(box) == {"kind", "bbox", "color", "score"} and len(box["bbox"]) == 4 and box["color"].startswith("#")
    assert set(tip) == {"kind", "bbox", "color", "score", "tail", "head"}
    assert second == {"image": str(clean), "width": 720, "height": 480, "marks": []}


def test_a_bad_image_is_reported_on_its_own_line_and_the_exit_code_is_1(
    shots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marked, _ = shots
    junk = tmp_path / "junk.png"
    junk.write_text("not pixels")
    code, out, _ = run(["marks", "detect", str(junk), str(marked), "--json"], capsys)
    assert code == 1
    error, ok = (json.loads(line) for line in out.splitlines())
    assert error == {"image": str(junk), "error": f"image '{junk}': not an image (cannot identify image file)"}
    assert len(ok["marks"]) == 2


def test_without_json_a_table_is_printed_and_errors_go_to_stderr(
    shots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marked, _ = shots
    code, out, err = run(["marks", "detect", str(marked), str(tmp_path / "gone.png")], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{marked}  720x480  2 marks"
    assert lines[1].split()[0] == "rectangle" and lines[2].split()[0] == "arrow" and "-> head" in lines[2]
    assert err.strip() == f"{tmp_path / 'gone.png'}: error: image '{tmp_path / 'gone.png'}': no such file"


def test_draw_writes_each_image_with_its_marks_outlined(
    shots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marked, clean = shots
    out_dir = tmp_path / "drawn"
    code, _, _ = run(["marks", "detect", str(marked), str(clean), "--draw", str(out_dir)], capsys)
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["clean.marks.png", "marked.marks.png"]
    drawn = Image.open(out_dir / "marked.marks.png")
    assert drawn.size == (720, 480)
    assert drawn.getpixel((99, 59)) != Image.open(marked).convert("RGB").getpixel((99, 59))  # the outline


def test_draw_into_a_file_is_a_one_line_user_error(
    shots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marked, _ = shots
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    code, _, err = run(["marks", "detect", str(marked), "--draw", str(blocker / "sub")], capsys)
    assert code == 2
    assert err.startswith(f"labelloop: error: --draw '{blocker / 'sub'}': cannot write marked.marks.png (")
    assert len(err.strip().splitlines()) == 1


def test_marks_is_listed_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "marks" in out and "Detect marks people drew on screenshots" in out
