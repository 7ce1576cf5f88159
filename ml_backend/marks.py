"""Marks drawn on screenshots as pre-annotations: the marks detector fills a grounding control's marks label.

For a RectangleLabels control whose labels include the marks label (``Settings.marks_label``; ``regions`` in
``label_configs/marked_screenshot.xml``), the predictor runs the screenshot-mark detector on each task's image
(:class:`converters.marks.adapter.MarksDetector`, the detector the exporter uses to box marks nobody drew), on
the image threads next to the image's decoding, never under the engine's concurrency bound. Each detected mark
becomes one rectangle of that control labelled with the marks label, in Label Studio percent of the original
image, scored with the detector's score. The model is asked only for the control's other labels (never the
redact label); with none left the control costs no engine call. A labelloop adapter is still asked with its
training prompt (it lists the marks label too, see ``converters/rows.py``), and the boxes it labels with the
marks label are dropped: the detector's replace them. The scores follow the predictor's rules: the control is
the mean of its rectangles, model's and detector's alike.

Failure: a detector failure on one image is logged with the task id, counted
(``labelloop_mark_detection_errors_total``) and leaves that task without detected marks; the task's other
controls, and the model's boxes of the same control, are predicted as usual. ``Settings.marks_detect=false``
turns the detector off: the model is then asked for the marks label like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from converters.label_config import ControlSpec, LabelConfig
from ml_backend.regions import BoxRegion, box_region

if TYPE_CHECKING:
    from PIL import Image

    from converters.marks.adapter import DetectedMark
    from ml_backend.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["MarksPlan", "mark_regions", "marks_on", "marks_plan"]


@dataclass(frozen=True)
class MarksPlan:
    """Which grounding controls of one label config get their marks label from the detector.

    Attributes:
        label: the marks label.
        controls: names of the grounding controls the detector fills (empty: no detection for this config).
        asked: for each of them, the control as the base model is asked about it: its labels without the marks
            label (absent when no label is left to ask for).
    """

    label: str
    controls: frozenset[str] = frozenset()
    asked: Mapping[str, ControlSpec] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """True when the detector runs on this config's images."""
        return bool(self.controls)

    def cache_tag(self, config_hash: str) -> str:
        """The label-config part of the cache key: predictions with detected marks never share an entry with
        predictions of a process where the detector is off."""
        return f"{config_hash}+marks" if self.active else config_hash

    def to_ask(self, specs: Sequence[ControlSpec], *, tuned: bool) -> list[ControlSpec]:
        """The controls to ask the model about: a detector-filled control without its marks label for the base
        model, unchanged for a labelloop adapter (asked as trained), left out when no other label remains."""
        out = []
        for spec in specs:
            if spec.name not in self.controls:
                out.append(spec)
            elif spec.name in self.asked:
                out.append(spec if tuned else self.asked[spec.name])
        return out

    def model_spec(self, spec: ControlSpec) -> ControlSpec:
        """``spec`` with the labels the model's boxes may carry (the marks label removed when the detector
        fills it)."""
        if spec.name not in self.controls:
            return spec
        return replace(spec, labels=tuple(label for label in spec.labels if label != self.label))


def marks_plan(config: LabelConfig, specs: Sequence[ControlSpec], *, enabled: bool) -> MarksPlan:
    """The :class:`MarksPlan` of ``config``: every grounding control in ``specs`` whose labels include
    ``config.marks_label``, when ``enabled`` (``Settings.marks_detect``); no control otherwise."""
    label = config.marks_label
    if not enabled:
        return MarksPlan(label)
    filled = [spec for spec in specs if spec.kind == "grounding" and label in spec.labels]
    asked = {}
    for spec in filled:
        without = replace(spec, labels=tuple(name for name in spec.labels if name != label))
        if config.box_labels(without):  # the redact label is never asked for
            asked[spec.name] = without
    return MarksPlan(label, frozenset(spec.name for spec in filled), asked)


def marks_on(image: Image.Image, task_id: int, metrics: Metrics | None = None) -> tuple[DetectedMark, ...] | None:
    """The marks drawn on ``image`` (pixels of ``image``, the original), top to bottom.

    Returns None when the detector fails: the failure is logged with ``task_id`` and counted, never raised.
    """
    from converters.marks.adapter import MarksDetector  # numpy/OpenCV: imported on the first marked config

    try:
        return tuple(MarksDetector()(image))
    except Exception:  # one image's detector failure must not fail its task
        log.warning("marks: detector failed on task %s; predicting it without detected marks", task_id, exc_info=True)
        if metrics is not None:
            metrics.mark_detection_errors.inc()
        return None


def mark_regions(
    marks: Sequence[DetectedMark], *, label: str, spec: ControlSpec, original_size: tuple[int, int]
) -> list[BoxRegion]:
    """One rectangle of ``spec`` per mark, labelled ``label``, scored with the detector's score (region ids are
    the predictor's to set). Marks with no area inside the image are left out."""
    width, height = original_size
    regions = []
    for mark in marks:
        box = mark.clipped(width, height)
        if box is None:
            continue
        regions.append(
            box_region(
                (box.x0, box.y0, box.x1, box.y1),
                label=label,
                from_name=spec.name,
                to_name=spec.image or "",
                original_size=original_size,
                score=round(min(1.0, max(0.0, float(mark.score))), 6),
                region_id="",
            )
        )
    return regions
