"""`labelloop export`: completed Label Studio tasks -> cleaned ms-swift JSONL, images and a report.

Options left out fall back to Settings (``LABELLOOP_*``), so the same export can be configured once in ``.env``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ml_backend.exceptions import ConfigError
from ml_backend.settings import Settings


@click.command("export")
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Label Studio JSON export (or snapshot with predictions, or JSON_MIN).",
)
@click.option(
    "--label-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The project's label config XML (with --input).",
)
@click.option(
    "--project", type=int, help="Read a live project through the API (LABELLOOP_LS_URL, LABELLOOP_LS_API_KEY)."
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory."
)
@click.option(
    "--media-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Label Studio's media dir on disk (default LABELLOOP_LS_MEDIA_DIR).",
)
@click.option(
    "--local-files-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="LOCAL_FILES_DOCUMENT_ROOT on disk (default LABELLOOP_LS_LOCAL_FILES_ROOT).",
)
@click.option(
    "--image-root",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where plain image paths may be read from (repeatable; default: the export file's directory).",
)
@click.option(
    "--max-side", type=click.IntRange(min=0), help="Longer side of written images (default LABELLOOP_MAX_SIDE, 1024)."
)
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), help="Share of images in val.jsonl.")
@click.option("--seed", type=int, help="Seed of the train/val split.")
@click.option(
    "--near-dup-distance", type=click.IntRange(-1, 64), help="Perceptual-hash distance of near duplicates (-1: off)."
)
@click.option("--no-exact-dedup", is_flag=True, help="Keep tasks whose image bytes repeat.")
@click.option("--min-caption-chars", type=click.IntRange(min=0), help="Shorter captions are dropped.")
@click.option("--min-answer-chars", type=click.IntRange(min=0), help="Shorter VQA answers are dropped.")
@click.option(
    "--vqa-mode",
    type=click.Choice(["multi_turn", "per_pair"]),
    help="One conversation per image or one row per question.",
)
@click.option("--redact-mode", type=click.Choice(["pixelate", "blur", "fill"]), help="How redacted regions are hidden.")
@click.option("--no-redact", is_flag=True, help="Do not hide redacted regions (they still never become rows).")
@click.option("--no-exif", is_flag=True, help="Ignore EXIF orientation.")
@click.option("--no-text-normalize", is_flag=True, help="Only tidy whitespace in texts.")
@click.option(
    "--detect-marks/--no-detect-marks",
    default=None,
    help="Detect the marks drawn on screenshots: they box the marks when nobody did, and rows point the note at "
    "what they mark (default: on for marked-screenshot configs, a RectangleLabels with the marks label).",
)
@click.option(
    "--original-field",
    default="original",
    show_default=True,
    help="Task-data key of a marked screenshot's unmarked original; the rows pointing at the marks use it.",
)
@click.option(
    "--unmark", is_flag=True, help="Without an original, inpaint the marks to make the clean copy those rows use."
)
@click.option("--workers", type=click.IntRange(min=0), help="Image worker processes (0: one per core).")
@click.option("--overwrite", is_flag=True, help="Replace an export already in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def export(settings: Settings, /, **flags: Any) -> None:
    """Export completed Label Studio tasks to ms-swift JSONL (train.jsonl, val.jsonl, images/, report.html).

    Give either --input FILE --label-config XML, or --project ID. Each task is written or listed in
    dropped.jsonl with its reason; the summary is printed at the end.
    """
    from converters.export import export_tasks
    from ml_backend.exports import export_options, label_config, media_config, with_mark_detector

    input_path: Path | None = flags["input_path"]
    project: int | None = flags["project"]
    if (input_path is None) == (project is None):
        raise click.UsageError("give either --input FILE (with --label-config) or --project ID")
    options = export_options(settings, flags)
    media = media_config(settings, flags, input_path)
    source, config_xml = _open_source(settings, input_path, flags["label_config"], project)
    config = label_config(settings, config_xml)
    options = with_mark_detector(
        options,
        config,
        detect=flags.get("detect_marks"),
        unmark=bool(flags.get("unmark")),
        original_field=flags.get("original_field"),
    )
    for skipped in config.skipped:
        click.echo(f"note: control {skipped.name} ({skipped.tag}) is not exported: {skipped.reason}", err=True)

    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock

    bar = tqdm(unit="task", disable=flags["quiet"], file=sys.stderr, dynamic_ncols=True, desc="export")

    def progress(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    try:
        report = export_tasks(source, config, flags["out_dir"], options=options, media=media, progress=progress)
    finally:
        bar.close()
    click.echo(
        f"{report.tasks_in} tasks in: {report.tasks_written} written "
        f"({report.rows.get('train', 0)} train rows, {report.rows.get('val', 0)} val rows, "
        f"{report.images_written} images), {report.tasks_dropped} dropped"
    )
    for reason, count in report.dropped_by_reason.items():
        click.echo(f"  dropped {count:>6}  {reason}")
    out = flags["out_dir"]
    click.echo(f"JSONL:  {out / 'train.jsonl'}  {out / 'val.jsonl'}")
    click.echo(f"report: {out / 'report.html'}  (dropped tasks: {out / 'dropped.jsonl'})")


def _open_source(
    settings: Settings, input_path: Path | None, label_config: Path | None, project: int | None
) -> tuple[Any, str]:
    from converters.tasks import ExportFile, ProjectSource

    if input_path is not None:
        if label_config is None:
            raise click.UsageError("--input needs --label-config (the project's label config XML)")
        try:
            xml = label_config.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--label-config: cannot read {label_config}: {exc.strerror}") from None
        return ExportFile(input_path), xml
    if not settings.ls_url or settings.ls_api_key is None:
        raise ConfigError("--project needs LABELLOOP_LS_URL and LABELLOOP_LS_API_KEY")
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=settings.ls_url, api_key=settings.ls_api_key.get_secret_value())
    assert project is not None
    source = ProjectSource(client, project)
    return source, source.label_config()
