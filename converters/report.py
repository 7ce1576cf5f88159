"""The export report: counts while the export streams, then ``report.json``, ``report.html`` and ``dropped.jsonl``.

Memory stays flat in the number of tasks: dropped tasks are appended to ``dropped.jsonl`` as they happen (the
report keeps the first :data:`EXAMPLES` of them and of the notes), and the thumbnail grid is a seeded reservoir
sample of at most ``thumbnails`` written tasks, drawn at the end under ``images/thumbs/``.

:meth:`ExportReport.check` enforces the exporter's promise: every task read is either written or dropped with
its reason.
"""

from __future__ import annotations

import html
import json
import random
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageDraw
from pydantic import BaseModel, Field

from converters.errors import ExportInvariantError
from converters.rows import Note, Row

EXAMPLES = 200
THUMB_SIDE = 256
_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


class DroppedTask(BaseModel):
    """A task that produced no row: its id (or position), the reason code and the message."""

    task: str
    task_id: int | None
    reason: str
    message: str


class ExportReport(BaseModel):
    """What an export did. ``tasks_in == tasks_written + tasks_dropped`` always (see :meth:`check`)."""

    source: str
    out_dir: str
    seconds: float = 0.0
    tasks_in: int = 0
    tasks_written: int = 0
    tasks_dropped: int = 0
    dropped_by_reason: dict[str, int] = Field(default_factory=dict)
    rows: dict[str, int] = Field(default_factory=lambda: {"train": 0, "val": 0})
    rows_by_kind: dict[str, int] = Field(default_factory=dict)
    images_written: int = 0
    labels: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="control -> label or choice -> count (boxes for grounding)"
    )
    notes_by_code: dict[str, int] = Field(default_factory=dict)
    cleaning: dict[str, int] = Field(default_factory=dict)
    converted_modes: dict[str, int] = Field(default_factory=dict)
    skipped_controls: list[dict[str, str]] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    dropped_examples: list[DroppedTask] = Field(default_factory=list)
    note_examples: list[str] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)

    def check(self) -> None:
        """Raise when a task went missing.

        Raises:
            ExportInvariantError: ``tasks_in != tasks_written + tasks_dropped`` (a bug in the exporter).
        """
        if self.tasks_in != self.tasks_written + self.tasks_dropped:
            raise ExportInvariantError(
                f"export lost track of tasks: {self.tasks_in} in, {self.tasks_written} written, "
                f"{self.tasks_dropped} dropped"
            )


@dataclass(slots=True)
class Thumb:
    """A written task picked for the report's grid."""

    task_id: int
    image: Path
    caption: str
    boxes: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    file: str = ""


@dataclass(slots=True)
class ReportBuilder:
    """Accumulates counts during an export; :meth:`finish` writes the files.

    Args:
        report: the report being filled (source, out_dir and options set by the caller).
        out_dir: the export directory.
        thumbnails: size of the thumbnail sample.
        seed: seed of the sample.
    """

    report: ExportReport
    out_dir: Path
    thumbnails: int = 60
    seed: int = 0
    _dropped: IO[str] | None = None
    _labels: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    _reasons: Counter[str] = field(default_factory=Counter)
    _kinds: Counter[str] = field(default_factory=Counter)
    _notes: Counter[str] = field(default_factory=Counter)
    _cleaning: Counter[str] = field(default_factory=Counter)
    _modes: Counter[str] = field(default_factory=Counter)
    _sample: list[Thumb] = field(default_factory=list)
    _seen: int = 0
    _random: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._random.seed(self.seed)
        self._dropped = (self.out_dir / "dropped.jsonl").open("w", encoding="utf-8")

    def task_in(self) -> None:
        """Count one task read from the source."""
        self.report.tasks_in += 1

    def drop(self, task: str, task_id: int | None, reason: str, message: str) -> None:
        """Record a dropped task (appended to ``dropped.jsonl`` at once)."""
        entry = DroppedTask(task=task, task_id=task_id, reason=reason, message=message)
        assert self._dropped is not None
        self._dropped.write(entry.model_dump_json() + "\n")
        self.report.tasks_dropped += 1
        self._reasons[reason] += 1
        if len(self.report.dropped_examples) < EXAMPLES:
            self.report.dropped_examples.append(entry)

    def notes(self, notes: list[Note]) -> None:
        """Count notes from row building."""
        for note in notes:
            self._notes[note.code] += 1
            if len(self.report.note_examples) < EXAMPLES:
                self.report.note_examples.append(note.message)

    def clean(self, what: str, count: int = 1) -> None:
        """Count a cleaning step (``exif_transposed``, ``resized``, ``near_duplicates``, ...)."""
        if count:
            self._cleaning[what] += count

    def mode(self, mode: str) -> None:
        """Count an image converted from ``mode`` to RGB."""
        self._modes[mode] += 1

    def written(self, task_id: int, rows: list[tuple[Row, str]], image: Path) -> None:
        """Record a task whose ``rows`` (each with its split) were written."""
        self.report.tasks_written += 1
        for row, split in rows:
            self.report.rows[split] = self.report.rows.get(split, 0) + 1
            self._kinds[row.kind] += 1
            for label in row.labels:
                self._labels[row.control][label] += 1
        self._offer_thumb(task_id, rows, image)

    def _offer_thumb(self, task_id: int, rows: list[tuple[Row, str]], image: Path) -> None:
        self._seen += 1
        slot = len(self._sample) if len(self._sample) < self.thumbnails else self._random.randrange(self._seen)
        if slot >= self.thumbnails:
            return
        boxes = tuple(box for row, _ in rows for box in row.boxes)
        texts = [message["content"] for row, _ in rows for message in row.data["messages"][1:2]]
        thumb = Thumb(task_id, image, " | ".join(texts)[:160], boxes)
        if slot == len(self._sample):
            self._sample.append(thumb)
        else:
            self._sample[slot] = thumb

    def finish(self, seconds: float, images_written: int) -> ExportReport:
        """Fill the totals, check the invariant, draw thumbnails and write report.json and report.html.

        Raises:
            ExportInvariantError: a task is neither written nor dropped.
        """
        if self._dropped is not None:
            self._dropped.close()
        report = self.report
        report.seconds = round(seconds, 3)
        report.images_written = images_written
        report.dropped_by_reason = dict(self._reasons.most_common())
        report.rows_by_kind = dict(self._kinds.most_common())
        report.labels = {control: dict(counts.most_common()) for control, counts in sorted(self._labels.items())}
        report.notes_by_code = dict(self._notes.most_common())
        report.cleaning = dict(sorted(self._cleaning.items()))
        report.converted_modes = dict(self._modes.most_common())
        report.files = {
            name: str(self.out_dir / name)
            for name in ("train.jsonl", "val.jsonl", "images", "report.json", "report.html", "dropped.jsonl")
        }
        report.check()
        self._draw_thumbnails()
        (self.out_dir / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        (self.out_dir / "report.html").write_text(render_html(report, self._sample), encoding="utf-8")
        return report

    def close(self) -> None:
        """Close ``dropped.jsonl`` when the export is abandoned."""
        if self._dropped is not None and not self._dropped.closed:
            self._dropped.close()

    def _draw_thumbnails(self) -> None:
        if not self._sample:
            return
        folder = self.out_dir / "images" / "thumbs"
        folder.mkdir(parents=True, exist_ok=True)
        colours: dict[str, str] = {}
        for thumb in sorted(self._sample, key=lambda t: t.task_id):
            with Image.open(thumb.image) as source:
                image = source.convert("RGB")
            scale = THUMB_SIDE / max(image.size)
            if scale < 1:
                image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
            else:
                scale = 1.0
            draw = ImageDraw.Draw(image)
            for label, (x0, y0, x1, y1) in thumb.boxes:
                colour = colours.setdefault(label, _COLOURS[len(colours) % len(_COLOURS)])
                draw.rectangle([x0 * scale, y0 * scale, x1 * scale, y1 * scale], outline=colour, width=2)
                draw.text((x0 * scale + 2, y0 * scale + 1), label, fill=colour)
            name = f"task-{thumb.task_id}.jpg"
            image.save(folder / name, "JPEG", quality=80)
            thumb.file = f"images/thumbs/{name}"


def render_html(report: ExportReport, sample: list[Thumb]) -> str:
    """A self-contained HTML page (inline CSS, thumbnails by relative path) summarising ``report``."""
    e = html.escape

    def table(title: str, counts: Mapping[str, object]) -> str:
        if not counts:
            return f"<h2>{e(title)}</h2><p>none</p>"
        body = "".join(f"<tr><td>{e(str(k))}</td><td>{v}</td></tr>" for k, v in counts.items())
        return f"<h2>{e(title)}</h2><table>{body}</table>"

    labels = "".join(table(f"labels of {control}", counts) for control, counts in report.labels.items())
    dropped = "".join(
        f"<tr><td>{e(d.task)}</td><td>{e(d.reason)}</td><td>{e(d.message)}</td></tr>" for d in report.dropped_examples
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in report.note_examples)
    skipped = "".join(
        f"<li>{e(s.get('name', ''))} ({e(s.get('tag', ''))}): {e(s.get('reason', ''))}</li>"
        for s in report.skipped_controls
    )
    grid = "".join(
        f'<figure><img src="{e(t.file)}" loading="lazy" alt="task {t.task_id}">'
        f"<figcaption>task {t.task_id}: {e(t.caption)}</figcaption></figure>"
        for t in sorted(sample, key=lambda t: t.task_id)
        if t.file
    )
    summary: dict[str, object] = {
        "tasks in": report.tasks_in,
        "tasks written": report.tasks_written,
        "tasks dropped": report.tasks_dropped,
        "rows in train.jsonl": report.rows.get("train", 0),
        "rows in val.jsonl": report.rows.get("val", 0),
        "images written": report.images_written,
        "seconds": report.seconds,
    }
    more = f" (first {EXAMPLES}; all in dropped.jsonl)" if report.tasks_dropped > EXAMPLES else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>labelloop export report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td {{ border: 1px solid #ccc; padding: 2px 8px; vertical-align: top; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: {THUMB_SIDE}px; }}
figure img {{ max-width: {THUMB_SIDE}px; max-height: {THUMB_SIDE}px; border: 1px solid #ccc; }}
figcaption {{ font-size: 12px; }}
</style></head><body>
<h1>labelloop export report</h1>
<p>source: {e(report.source)}<br>output: {e(report.out_dir)}</p>
{table("summary", summary)}
{table("dropped tasks by reason", report.dropped_by_reason)}
{table("rows by kind", report.rows_by_kind)}
{labels}
{table("cleaning", report.cleaning)}
{table("images converted to RGB, by source mode", report.converted_modes)}
{table("notes by code", report.notes_by_code)}
<h2>skipped controls</h2><ul>{skipped or "<li>none</li>"}</ul>
<h2>dropped tasks{e(more)}</h2><table>{dropped or "<tr><td>none</td></tr>"}</table>
<h2>notes</h2><ul>{notes or "<li>none</li>"}</ul>
<h2>sample of written tasks ({len(sample)})</h2><div class="grid">{grid}</div>
<h2>options</h2><pre>{e(json.dumps(report.options, indent=2, default=str))}</pre>
</body></html>
"""
