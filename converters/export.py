"""The export pipeline: Label Studio tasks -> cleaned ms-swift JSONL, images and a report, streamed.

For each task, in source order::

    parse (tasks) -> pick the annotation (annotations) -> image work in a process pool: fetch (media), decode,
    orient, convert, resize, redact, encode, hash, write once (images) -> duplicates (dedup) -> rows (rows)
    -> train or val by image (split) -> JSONL lines appended; counts (report)

Every task ends as written (at least one row) or dropped with a reason (``dropped.jsonl``); the report checks
``tasks_in == tasks_written + tasks_dropped`` and raises :class:`~converters.errors.ExportInvariantError` if not.

Memory is flat in the number of tasks: the source is streamed, at most ``workers * in_flight_per_worker`` images
are in flight, rows go to disk as they are made, and what is kept per task is a few dozen bytes (duplicate
hashes). Image work uses every core (``workers=0``); results are consumed in source order, so the first task to
show an image keeps it and two runs give the same files.

Output directory: ``train.jsonl``, ``val.jsonl``, ``images/<sha256>.<jpg|png>``, ``images/thumbs/``,
``report.json``, ``report.html``, ``dropped.jsonl``. The JSONL files appear (renamed from ``*.partial``) only
when the export finishes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from converters.annotations import select_annotation
from converters.boxes import Box, PercentRect
from converters.dedup import Deduplicator, Duplicate
from converters.errors import ConvertError, ImageError
from converters.images import (
    ImageOptions,
    PreparedImage,
    RedactMode,
    encode_image,
    perceptual_hash,
    prepare_image,
    redact,
    write_once,
)
from converters.label_config import LabelConfig
from converters.media import MediaConfig, MediaFetcher, safe_url
from converters.report import ExportReport, ReportBuilder
from converters.rows import ImageFrame, Note, Row, RowOptions, VqaMode, build_rows, marked_text, redaction_rects
from converters.split import split_of
from converters.tasks import Task, is_min_row, parse_min_task, parse_task, task_label

log = logging.getLogger(__name__)
_OWN_IMAGE = re.compile(r"[0-9a-f]{64}\.(jpg|png)")

Progress = Callable[[int, int | None], None]


@runtime_checkable
class MarkDetector(Protocol):
    """Finds marks drawn on a screenshot (the detector in ``converters/marks/`` will implement this).

    Called in the image workers on the written image (RGB, oriented and resized, before redaction); returns
    boxes in pixels of that image. Must be picklable (it is sent to the worker processes). Its boxes label the
    marks of grounding controls that have the marks label when no person drew any (see ``rows.py``).
    """

    def __call__(self, image: Image.Image) -> Sequence[Box]: ...


@runtime_checkable
class MarkRemover(Protocol):
    """A mark detector that can also take its marks off an image (``ExportOptions.unmark``)."""

    def remove(self, image: Image.Image, marks: Sequence[Box]) -> Image.Image: ...


DETECT_MAX_SIDE = 2048
"""Marks are detected on the source at up to this longer side when the written image is smaller: a 2 px stroke
shrunk to 1024 px is hardly a stroke any more. Boxes are then scaled to the written image."""


@runtime_checkable
class TaskSource(Protocol):
    """Where tasks come from: :class:`~converters.tasks.ExportFile` or :class:`~converters.tasks.ProjectSource`."""

    @property
    def description(self) -> str: ...

    def count(self) -> int | None: ...

    def __iter__(self) -> Any: ...


class ExportOptions(BaseModel):
    """Every knob of an export; each cleaning step is on by default.

    The redact and marks *labels* and the review control belong to the label config
    (:func:`~converters.label_config.parse_label_config`); these options say what to do with them.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    max_side: int = Field(1024, ge=0, description="Longer side of written images (0: keep the size).")
    max_image_pixels: int = Field(80_000_000, ge=1, description="Refuse bigger images (bomb guard).")
    exif_transpose: bool = Field(True, description="Apply EXIF orientation before boxes.")
    jpeg_draft: bool = Field(True, description="Decode JPEGs at reduced scale when much larger than needed.")
    jpeg_quality: int = Field(90, ge=1, le=100)
    png_compress_level: int = Field(1, ge=0, le=9)
    exact_dedup: bool = Field(True, description="Drop tasks whose image bytes were already seen.")
    near_dup_distance: int | None = Field(
        4, ge=0, le=64, description="Perceptual-hash Hamming distance counted as a duplicate (None: off)."
    )
    normalize_text: bool = Field(True, description="NFC, invisible characters, full-width forms, whitespace.")
    min_caption_chars: int = Field(3, ge=0, description="Shorter captions/descriptions are dropped.")
    min_answer_chars: int = Field(1, ge=0, description="Shorter VQA answers are dropped.")
    redact: bool = Field(True, description="Hide regions with the redact label in written images.")
    redact_mode: RedactMode = "pixelate"
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    vqa_mode: VqaMode = "multi_turn"
    prefer_ground_truth: bool = True
    workers: int = Field(0, ge=0, description="Image worker processes (0: one per core; 1: no pool).")
    in_flight_per_worker: int = Field(4, ge=1, le=64)
    thumbnails: int = Field(60, ge=0, le=1000, description="Tasks drawn in report.html.")
    overwrite: bool = Field(False, description="Replace an existing export in the output directory.")
    mark_detector: MarkDetector | None = Field(None, exclude=True)
    refer_marks: bool = Field(
        False, description="Marked screenshots: also write rows pointing the annotation text at the marked places."
    )
    original_key: str | None = Field(
        "original",
        description="Task-data key of a marked screenshot's unmarked original (used by the rows that refer to marks).",
    )
    unmark: bool = Field(False, description="Without an original, inpaint the detected marks to make a clean copy.")
    group_marked_near_dups: bool = Field(
        True,
        description="Marked screenshots: keep a near-duplicate whose note or marks differ, in its original's split.",
    )

    def image_options(self) -> ImageOptions:
        """The image part of the options."""
        return ImageOptions(
            max_side=self.max_side,
            max_pixels=self.max_image_pixels,
            exif_transpose=self.exif_transpose,
            draft=self.jpeg_draft,
            jpeg_quality=self.jpeg_quality,
            png_compress_level=self.png_compress_level,
            redact_mode=self.redact_mode,
        )

    def row_options(self) -> RowOptions:
        """The row part of the options."""
        return RowOptions(
            min_caption_chars=self.min_caption_chars,
            min_answer_chars=self.min_answer_chars,
            normalize_text=self.normalize_text,
            vqa_mode=self.vqa_mode,
            refer_marks=self.refer_marks,
        )

    def worker_count(self) -> int:
        """Worker processes to use."""
        return self.workers or os.cpu_count() or 1


# --- image work (runs in the worker processes) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageJob:
    """One task's image work: where the image is and which rectangles to hide."""

    task_id: int
    url: str
    redactions: tuple[PercentRect, ...] = ()
    original_url: str | None = None
    unmark: bool = False


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What the worker did with one image, or why it could not (``error``, ``reason``)."""

    task_id: int
    error: str | None = None
    reason: str | None = None
    source_sha256: str = ""
    sha256: str = ""
    path: str = ""
    source_width: int = 0
    source_height: int = 0
    width: int = 0
    height: int = 0
    phash: int = 0
    exif_transposed: bool = False
    converted_from: str | None = None
    resized: bool = False
    redacted: int = 0
    detected_marks: tuple[Box, ...] = ()
    clean_kind: str | None = None
    """How the clean copy was made: ``original`` (the task's unmarked original), ``unmarked`` (inpainted)."""
    clean_error: str | None = None
    clean_sha256: str = ""
    clean_path: str = ""
    clean_width: int = 0
    clean_height: int = 0


@dataclass
class ImageWorker:
    """Fetches and cleans images; one per worker process (or one in-process when ``workers=1``)."""

    media: MediaConfig
    options: ImageOptions
    images_dir: Path
    redact_regions: bool = True
    detector: MarkDetector | None = None
    _fetcher: MediaFetcher | None = field(default=None, init=False)

    def process(self, job: ImageJob) -> ImageResult:
        """Run the image steps for ``job``; image problems come back as ``error``/``reason``, never raised.

        Raises:
            OSError: the output directory cannot be written (the export cannot go on).
        """
        import hashlib

        if self._fetcher is None:
            self._fetcher = MediaFetcher(self.media)
        shown = safe_url(job.url)
        try:
            data = self._fetcher.fetch(job.url)
            prepared = prepare_image(data, source=shown, options=self.options)
        except ImageError as exc:
            return ImageResult(job.task_id, error=str(exc), reason=exc.reason)
        image = prepared.image
        marks = self._detect(data, shown, prepared)
        clean, clean_kind, clean_error = self._clean_copy(job, prepared, marks)
        redacted = self._redact(image, prepared, job) if self.redact_regions and job.redactions else 0
        encoded = encode_image(image, prepared.output_format, self.options)
        digest, path = write_once(self.images_dir, encoded, prepared.output_format)
        clean_fields: dict[str, Any] = {"clean_kind": clean_kind, "clean_error": clean_error}
        if clean is not None:
            if self.redact_regions and job.redactions:
                self._redact(clean.image, clean, job)
            clean_digest, clean_path = write_once(
                self.images_dir, encode_image(clean.image, clean.output_format, self.options), clean.output_format
            )
            clean_fields.update(
                clean_sha256=clean_digest,
                clean_path=str(clean_path),
                clean_width=clean.image.width,
                clean_height=clean.image.height,
            )
        return ImageResult(
            task_id=job.task_id,
            source_sha256=hashlib.sha256(data).hexdigest(),
            sha256=digest,
            path=str(path),
            source_width=prepared.source_width,
            source_height=prepared.source_height,
            width=image.width,
            height=image.height,
            phash=perceptual_hash(image),
            exif_transposed=prepared.exif_transposed,
            converted_from=prepared.converted_from,
            resized=prepared.resized,
            redacted=redacted,
            detected_marks=marks,
            **clean_fields,
        )

    def _redact(self, image: Image.Image, prepared: PreparedImage, job: ImageJob) -> int:
        width, height = prepared.source_width, prepared.source_height
        sx, sy = image.width / width, image.height / height
        boxes = [rect.to_pixels(width, height).scaled(sx, sy) for rect in job.redactions]
        return redact(image, boxes, self.options.redact_mode)

    def _detect(self, data: bytes, shown: str, prepared: PreparedImage) -> tuple[Box, ...]:
        """Marks on the image, in its pixels; detected on a larger decode when the written image was shrunk."""
        if self.detector is None:
            return ()
        image = prepared.image
        if not prepared.resized or max(image.size) >= DETECT_MAX_SIDE:
            return tuple(self.detector(image))
        larger = prepare_image(data, source=shown, options=replace(self.options, max_side=DETECT_MAX_SIDE))
        sx, sy = image.width / larger.image.width, image.height / larger.image.height
        return tuple(box.scaled(sx, sy) for box in self.detector(larger.image))

    def _clean_copy(
        self, job: ImageJob, prepared: PreparedImage, marks: tuple[Box, ...]
    ) -> tuple[PreparedImage | None, str | None, str | None]:
        """The unmarked copy of a marked screenshot: its original when the task has one, else (``unmark``) the
        image with the marks inpainted; (copy, how it was made, why the original could not be used)."""
        error = None
        if job.original_url is not None:
            try:
                data = self._fetch(job.original_url)
                original = prepare_image(data, source=safe_url(job.original_url), options=self.options)
                return original, "original", None
            except ImageError as exc:
                error = str(exc)
        remover: object = self.detector
        if job.unmark and marks and isinstance(remover, MarkRemover):
            clean = remover.remove(prepared.image.copy(), marks)
            return PreparedImage(clean, clean.width, clean.height, prepared.output_format), "unmarked", error
        return None, None, error

    def _fetch(self, url: str) -> bytes:
        if self._fetcher is None:
            self._fetcher = MediaFetcher(self.media)
        return self._fetcher.fetch(url)

    def close(self) -> None:
        """Close the HTTP client."""
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None


_WORKER: dict[str, ImageWorker] = {}  # the pool process's own worker, set once by _init_worker


def _init_worker(worker: ImageWorker) -> None:
    _WORKER["worker"] = worker


def _run_job(job: ImageJob) -> ImageResult:
    return _WORKER["worker"].process(job)


class _ImagePool:
    """A bounded, ordered queue of image jobs: in-process for one worker, a process pool otherwise."""

    def __init__(self, worker: ImageWorker, workers: int, in_flight: int) -> None:
        self._worker = worker
        self._executor: ProcessPoolExecutor | None = None
        if workers > 1:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["converters.export"])
            self._executor = ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(worker,)
            )
        self.limit = workers * in_flight if workers > 1 else 1

    def submit(self, job: ImageJob) -> Future[ImageResult]:
        if self._executor is not None:
            return self._executor.submit(_run_job, job)
        future: Future[ImageResult] = Future()
        future.set_result(self._worker.process(job))
        return future

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._worker.close()


# --- the pipeline ----------------------------------------------------------------------------------------


@dataclass
class _Pending:
    task: Task
    annotation_index: int
    future: Future[ImageResult]


class _Export:
    """State of one export run (see :func:`export_tasks`)."""

    def __init__(
        self, config: LabelConfig, out_dir: Path, options: ExportOptions, report: ReportBuilder, progress: Progress
    ) -> None:
        self.config = config
        self.out_dir = out_dir
        self.options = options
        self.report = report
        self.progress = progress
        self.row_options = options.row_options()
        self.dedup = Deduplicator(exact=options.exact_dedup, near_distance=options.near_dup_distance)
        # marked screenshots: kept task -> (its split group, its note's digest and marks), for near-duplicates
        grouped = options.group_marked_near_dups and bool(config.by_kind("marked"))
        self.marked: dict[int, tuple[str, _Signature]] | None = {} if grouped else None
        self.kept_images: set[str] = set()
        self.written_images: set[str] = set()
        self.done = 0
        self.total: int | None = None
        self.files: dict[str, IO[str]] = {
            split: (out_dir / f"{split}.jsonl.partial").open("w", encoding="utf-8") for split in ("train", "val")
        }

    def step(self) -> None:
        self.done += 1
        self.progress(self.done, self.total)

    def drop(self, label: str, task_id: int | None, error: ConvertError | str, reason: str | None = None) -> None:
        message = str(error)
        code = reason or (error.reason if isinstance(error, ConvertError) else "invalid_task")
        log.debug("export: dropped %s: %s", label, message)
        self.report.drop(label, task_id, code, message)
        self.step()

    def prepare(self, raw: Any, position: int) -> tuple[Task, int, ImageJob] | None:
        """Parse, choose the annotation and plan the image job; drops the task and returns None on failure."""
        label = task_label(raw, position)
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        task_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
        try:
            task = parse_min_task(raw, self.config, position) if is_min_row(raw) else parse_task(raw, position)
            annotation = select_annotation(task, self.config, prefer_ground_truth=self.options.prefer_ground_truth)
        except ConvertError as exc:
            self.drop(label, task_id, exc)
            return None
        key = self.config.image_key
        url = task.data.get(key)
        if not isinstance(url, str) or not url.strip():
            found = "missing" if url is None else f"expected an image URL, got {url!r:.60}"
            self.drop(label, task.id, f"task {task.id}: data.{key}: {found}", "image_missing")
            return None
        rects = tuple(redaction_rects(annotation, self.config))
        original_url = None
        refer = self.options.refer_marks
        if refer and self.options.original_key:
            value = task.data.get(self.options.original_key)
            if isinstance(value, str) and value.strip() and value != url:
                original_url = value
        return task, annotation.index, ImageJob(task.id, url, rects, original_url, refer and self.options.unmark)

    def finish_task(self, pending: _Pending) -> None:
        """Turn one image result into rows (or a drop)."""
        task = pending.task
        label = f"task {task.id}"
        result = pending.future.result()
        if result.error is not None:
            self.drop(label, task.id, f"task {task.id}: {result.error}", result.reason)
            return
        self.written_images.add(result.sha256)
        self.report.clean("exif_transposed", int(result.exif_transposed))
        self.report.clean("resized", int(result.resized))
        self.report.clean("redacted_regions", result.redacted)
        if result.converted_from:
            self.report.mode(result.converted_from)
        annotation = task.annotations[pending.annotation_index]
        duplicate, group, signature = self._duplicate(task, annotation, result)
        if duplicate is not None:
            kind = "exact_duplicates" if duplicate.kind == "exact" else "near_duplicates"
            self.report.clean(kind)
            detail = (
                "the same image"
                if duplicate.kind == "exact"
                else f"a near-identical image (distance {duplicate.distance})"
            )
            self.drop(label, task.id, f"task {task.id}: {detail} as task {duplicate.of_task}", kind[:-1])
            return
        frame = self._frame(task, result)
        built = build_rows(task, annotation, self.config, frame, self.row_options, detected_marks=result.detected_marks)
        self.report.notes(built.notes)
        for what, count in built.stats.items():
            self.report.clean(what, count)
        if not built.rows:
            if built.notes:
                reason = built.notes[0].code
                message = "; ".join(note.message for note in built.notes[:3])
            else:
                reason, message = "no_labels", f"task {task.id}: the annotation has no result for an exported control"
            self.drop(label, task.id, message, reason)
            return
        if self.marked is not None and group == result.sha256:
            self.marked[task.id] = (group, signature)
        split = split_of(group, seed=self.options.seed, val_fraction=self.options.val_fraction)
        written: list[tuple[Row, str]] = []
        for row in built.rows:
            self.files[split].write(json.dumps(row.data, ensure_ascii=False) + "\n")
            written.append((row, split))
        self.kept_images.add(result.sha256)
        if result.clean_sha256 and any(row.data["images"] == [frame.clean_path] for row in built.rows):
            self.kept_images.add(result.clean_sha256)
        self.report.written(task.id, written, Path(result.path))
        self.step()

    def _duplicate(self, task: Task, annotation: Any, result: ImageResult) -> tuple[Duplicate | None, str, _Signature]:
        """(the duplicate the image is, if it is one to drop; the split group; the marked signature)."""
        duplicate = self.dedup.check(result.source_sha256, result.phash, task.id)
        group = result.sha256
        signature = _signature(marked_text(annotation, self.config), result) if self.marked is not None else _NONE
        if duplicate is not None and duplicate.kind == "near" and self.marked is not None:
            # The same screen marked again: another mark or another note is another example. Kept, but in its
            # original's split group, so near-identical screens never straddle train and val.
            kept = self.marked.get(duplicate.of_task)
            if kept is not None and not kept[1].same(signature):
                self.report.clean("near_duplicates_grouped")
                return None, kept[0], signature
        return duplicate, group, signature

    def _frame(self, task: Task, result: ImageResult) -> ImageFrame:
        """The written image (and its clean copy) as rows see it; counts how the clean copy was made."""
        self.report.clean(f"clean_copies_{result.clean_kind}", int(result.clean_kind is not None))
        if result.clean_error is not None:
            self.report.clean("originals_unreadable")
            self.report.notes([Note("original_unreadable", f"task {task.id}: unmarked original: {result.clean_error}")])
        if result.clean_sha256:
            self.written_images.add(result.clean_sha256)
        return ImageFrame(
            path=str(Path(result.path).resolve()),
            sha256=result.sha256,
            source_sha256=result.source_sha256,
            source=safe_url(str(task.data.get(self.config.image_key))),
            source_width=result.source_width,
            source_height=result.source_height,
            width=result.width,
            height=result.height,
            clean_path=str(Path(result.clean_path).resolve()) if result.clean_path else None,
            clean_sha256=result.clean_sha256,
            clean_width=result.clean_width,
            clean_height=result.clean_height,
        )

    def close(self, *, completed: bool) -> None:
        for handle in self.files.values():
            handle.close()
        for split in ("train", "val"):
            partial = self.out_dir / f"{split}.jsonl.partial"
            if completed:
                partial.replace(self.out_dir / f"{split}.jsonl")
            else:
                partial.unlink(missing_ok=True)
        for digest in self.written_images - self.kept_images:
            for path in (self.out_dir / "images").glob(f"{digest}.*"):
                path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class _Signature:
    """What makes a marked screenshot an example: its note (a digest) and its marks (boxes in image fractions)."""

    note: bytes
    marks: tuple[tuple[float, float, float, float], ...]

    def same(self, other: _Signature) -> bool:
        """The same note and marks one to one at IoU >= 0.6 (the same marks seen through another encoding)."""
        if self.note != other.note or len(self.marks) != len(other.marks):
            return False
        left = list(other.marks)
        for box in self.marks:
            match = next((b for b in left if _iou(box, b) >= 0.6), None)
            if match is None:
                return False
            left.remove(match)
        return True


_NONE = _Signature(b"", ())


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def _signature(note: str, result: ImageResult) -> _Signature:
    import hashlib

    w, h = max(result.width, 1), max(result.height, 1)
    boxes = tuple((b.x0 / w, b.y0 / h, b.x1 / w, b.y1 / h) for b in result.detected_marks)
    return _Signature(hashlib.blake2b(note.strip().encode(), digest_size=12).digest(), boxes)


def export_tasks(
    source: Iterable[Any] | TaskSource,
    config: LabelConfig,
    out_dir: Path,
    *,
    options: ExportOptions | None = None,
    media: MediaConfig | None = None,
    progress: Progress | None = None,
    source_name: str | None = None,
) -> ExportReport:
    """Export labelled tasks to ``out_dir`` (see the module docstring for what is written).

    Args:
        source: raw task dicts: an :class:`~converters.tasks.ExportFile`, a
            :class:`~converters.tasks.ProjectSource`, or any iterable (tests).
        config: the project's parsed label config.
        out_dir: the output directory (created; an existing export there needs ``options.overwrite``).
        options: export options (defaults when None).
        media: where images may come from (local files only, no hosts, when None).
        progress: called as ``progress(done, total)`` after each task (total None until known).
        source_name: how the report names the source (defaults to the source's description).

    Returns:
        The report, also written to ``report.json``.

    Raises:
        ConvertError: the output directory already holds an export, or the source breaks mid-stream (malformed
            JSON, an API page that fails); partial JSONL files are removed.
        ExportInvariantError: a task was neither written nor dropped (a bug).
        OSError: the output cannot be written.
    """
    options = options or ExportOptions()
    media = media or MediaConfig()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite=options.overwrite)
    name = source_name or getattr(source, "description", None) or "tasks"
    report = ExportReport(
        source=name,
        out_dir=str(out_dir),
        options=options.model_dump(mode="json"),
        skipped_controls=[{"name": s.name, "tag": s.tag, "reason": s.reason} for s in config.skipped],
    )
    builder = ReportBuilder(report, out_dir, thumbnails=options.thumbnails, seed=options.seed)
    state = _Export(config, out_dir, options, builder, progress or (lambda done, total: None))
    worker = ImageWorker(media, options.image_options(), out_dir / "images", options.redact, options.mark_detector)
    workers = options.worker_count()
    pool = _ImagePool(worker, workers, options.in_flight_per_worker)
    started = time.perf_counter()
    completed = False
    log.info("export: %s -> %s with %d image worker(s)", name, out_dir, workers)
    try:
        pending: deque[_Pending] = deque()
        count = source.count if isinstance(source, TaskSource) else None
        if count is not None:
            state.total = count()  # an export file is checked whole here, before any work
        for position, raw in enumerate(source):
            if state.total is None and count is not None:
                state.total = count()  # a live project knows its size after the first page
            builder.task_in()
            planned = state.prepare(raw, position)
            if planned is None:
                continue
            task, annotation_index, job = planned
            pending.append(_Pending(task, annotation_index, pool.submit(job)))
            while len(pending) >= pool.limit:
                state.finish_task(pending.popleft())
        while pending:
            state.finish_task(pending.popleft())
        completed = True
    finally:
        pool.close()
        state.close(completed=completed)
        if not completed:
            builder.close()
    result = builder.finish(time.perf_counter() - started, len(state.kept_images))
    log.info(
        "export: %d tasks in, %d written (%d train rows, %d val rows), %d dropped",
        result.tasks_in,
        result.tasks_written,
        result.rows.get("train", 0),
        result.rows.get("val", 0),
        result.tasks_dropped,
    )
    return result


def _prepare_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    existing = [name for name in ("train.jsonl", "val.jsonl", "report.json") if (out_dir / name).exists()]
    if existing and not overwrite:
        raise ConvertError(
            f"{out_dir} already holds an export ({', '.join(existing)}); choose another directory or overwrite it"
        )
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in ("train.jsonl", "val.jsonl", "report.json", "report.html", "dropped.jsonl"):
        (out_dir / name).unlink(missing_ok=True)
    # A previous export's images (named <sha256>.<ext>) and thumbnails go too, or they would linger unreferenced.
    for path in [*images.glob("*.jpg"), *images.glob("*.png"), *images.glob("thumbs/*.jpg")]:
        if _OWN_IMAGE.fullmatch(path.name) or path.parent.name == "thumbs":
            path.unlink()
