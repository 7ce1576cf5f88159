"""`labelloop marks detect IMAGE... [--json] [--draw DIR]`: find the marks people drew on screenshots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ml_backend.exceptions import LabelloopError


@click.group("marks")
def marks() -> None:
    """Detect marks people drew on screenshots (boxes, ellipses, arrows, highlights, labels)."""


@marks.command("detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image and line.")
@click.option(
    "--draw",
    "draw_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each image with the detected marks outlined to DIR (as <name>.marks.png).",
)
@click.option(
    "--min-score", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True, help="Drop marks below this."
)
@click.pass_context
def detect(
    ctx: click.Context, images: tuple[Path, ...], as_json: bool, draw_dir: Path | None, min_score: float
) -> None:
    """Detect the marks drawn on each IMAGE: kind, box [x0, y0, x1, y1) in pixels, colour, score; arrows' ends.

    An image that cannot be read is reported on its own (an "error" key in --json mode) and the others go on;
    the exit code is then 1.
    """
    from converters.errors import ConvertError
    from converters.marks import as_rgb, detect_marks, open_image

    failed = 0
    written: set[Path] = set()
    for path in images:
        try:
            with open_image(path) as image:
                rgb = as_rgb(image)
            found = detect_marks(rgb, min_score=min_score)
        except ConvertError as exc:
            failed += 1
            if as_json:
                click.echo(json.dumps({"image": str(path), "error": str(exc)}, ensure_ascii=False))
            else:
                click.echo(f"{path}: error: {exc}", err=True)
            continue
        height, width = rgb.shape[:2]
        if as_json:
            record = {"image": str(path), "width": width, "height": height, "marks": [m.to_dict() for m in found]}
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            click.echo(f"{path}  {width}x{height}  {len(found)} mark{'' if len(found) == 1 else 's'}")
            for m in found:
                arrow = f"  tail {list(m.tail)} -> head {list(m.head)}" if m.tail and m.head else ""
                click.echo(f"  {m.kind:<9}  {list(m.bbox)!s:<24}  {m.color}  {m.score:.2f}{arrow}")
        if draw_dir is not None:
            _draw(rgb, found, draw_dir, path, written)
    if failed:
        ctx.exit(1)


def _draw(rgb: Any, found: Sequence[Any], draw_dir: Path, path: Path, written: set[Path]) -> None:
    """Write RGB with FOUND outlined to DRAW_DIR/<stem>.marks.png (-2, -3... when a name repeats)."""
    from converters.marks.drawing import draw_marks

    target = draw_dir / f"{path.stem}.marks.png"
    n = 2
    while target in written:
        target = draw_dir / f"{path.stem}-{n}.marks.png"
        n += 1
    written.add(target)
    try:
        draw_dir.mkdir(parents=True, exist_ok=True)
        draw_marks(rgb, found).save(target)
    except OSError as exc:
        raise LabelloopError(f"--draw {str(draw_dir)!r}: cannot write {target.name} ({exc})") from None
