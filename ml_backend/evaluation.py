"""Candidate versus current on the held-out reviewed tasks, and the promotion gate.

Both models answer the held-out tasks (the exporter's val split) through the backend's own prediction path,
:meth:`ml_backend.predictor.Predictor.predict` with an explicit adapter (the candidate is not active yet), so
what is measured is exactly what Label Studio would get. Each answer is compared with the task's counting
annotation (``converters.annotations.select_annotation``: reviewed, latest) per control:

- **grounding** (RectangleLabels): F1 of predicted boxes against reviewed boxes, micro-averaged over tasks; a
  prediction matches a reviewed box of the same label at IoU >= ``Settings.eval_iou`` (greedy, best IoU first,
  one-to-one). The mean IoU of the matches is reported beside it.
- **choices**: exact match of the chosen set (accuracy).
- **caption / vqa / marked** (TextArea): **chrF** (character n-gram F-score, n = 1..6, beta = 2; Popovic 2015)
  on normalised text, averaged over tasks, with normalised exact match reported beside it. Why chrF: it gives
  partial credit to near-miss answers ("dark red" vs "red", word order, inflections) where exact match gives
  none and BLEU's word n-grams give nothing on short answers; it needs no tokenizer, so Chinese and Japanese
  text without spaces is scored like English; and it is cheap and deterministic, with no model to download.
- the review control is not scored.

A task whose prediction failed or lacks a control counts as an empty answer (a miss), never as skipped.
The project's score is the mean of the per-control primary metrics (F1, accuracy, chrF), in [0, 1].

The gate (:func:`gate`): promote when ``candidate >= current - Settings.promote_margin``; refuse when there is
nothing held out to measure on.
"""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.boxes import PercentRect
from converters.label_config import ControlSpec, LabelConfig
from converters.text import normalize_text

if TYPE_CHECKING:
    from ml_backend.predictor import Predictor
    from ml_backend.registry import ModelVersion
    from ml_backend.settings import Settings

log = logging.getLogger(__name__)

TEXT_KINDS = frozenset({"caption", "vqa", "marked"})
CHRF_ORDER = 6
CHRF_BETA = 2.0


# --- metrics --------------------------------------------------------------------------------------------------


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes; 0 when either has no area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


LabelledBox = tuple[str, tuple[float, float, float, float]]


def match_boxes(predicted: Sequence[LabelledBox], gold: Sequence[LabelledBox], iou: float) -> tuple[int, list[float]]:
    """Greedy one-to-one matching, best IoU first, same label, IoU >= ``iou``: (true positives, their IoUs)."""
    pairs = sorted(
        ((box_iou(p[1], g[1]), i, j) for i, p in enumerate(predicted) for j, g in enumerate(gold) if p[0] == g[0]),
        reverse=True,
    )
    used_p: set[int] = set()
    used_g: set[int] = set()
    ious: list[float] = []
    for value, i, j in pairs:
        if value < iou:
            break
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        ious.append(value)
    return len(ious), ious


def normalize_answer(text: str) -> str:
    """Text as compared: the exporter's normalisation, case-folded, outer punctuation and spaces stripped.

    Example: ``normalize_answer("  Red. ")`` -> ``"red"``.
    """
    text = normalize_text(text).casefold()
    return text.strip().strip("".join(ch for ch in set(text) if unicodedata.category(ch).startswith("P"))).strip()


def chrf(hypothesis: str, reference: str, *, order: int = CHRF_ORDER, beta: float = CHRF_BETA) -> float:
    """Sentence chrF in [0, 1] (whitespace ignored, as in sacrebleu's default).

    Orders longer than either string are left out of the average (effective order); two empty strings score 1,
    one empty string 0.

    Example: ``chrf("red", "red")`` -> 1.0; ``chrf("dark red", "red")`` -> 0.70; ``chrf("blue", "red")`` -> 0.10
    (one shared letter); ``chrf("cat", "red")`` -> 0.0.
    """
    hyp = "".join(hypothesis.split())
    ref = "".join(reference.split())
    if not hyp and not ref:
        return 1.0
    if not hyp or not ref:
        return 0.0
    precisions, recalls = [], []
    for n in range(1, order + 1):
        hyp_grams = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        ref_grams = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not hyp_grams or not ref_grams:
            break
        overlap = sum((hyp_grams & ref_grams).values())
        precisions.append(overlap / sum(hyp_grams.values()))
        recalls.append(overlap / sum(ref_grams.values()))
    precision = sum(precisions) / len(precisions)
    recall = sum(recalls) / len(recalls)
    if precision == 0 and recall == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * precision * recall / (b2 * precision + recall)


# --- what a result says per control ----------------------------------------------------------------------------


def _regions(result: Sequence[Mapping[str, Any]] | None, control: str) -> list[Mapping[str, Any]]:
    return [
        region
        for region in result or ()
        if isinstance(region, Mapping)
        and region.get("from_name") == control
        and isinstance(region.get("value"), Mapping)
    ]


def result_text(result: Sequence[Mapping[str, Any]] | None, control: str) -> str:
    """All TextArea entries of ``control`` in an LS result, joined by newlines."""
    texts: list[str] = []
    for region in _regions(result, control):
        value = region["value"].get("text")
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(str(item) for item in value)
    return "\n".join(texts)


def result_choices(result: Sequence[Mapping[str, Any]] | None, control: str) -> frozenset[str]:
    """The set of choices of ``control`` in an LS result."""
    chosen: set[str] = set()
    for region in _regions(result, control):
        value = region["value"].get("choices")
        if isinstance(value, list):
            chosen.update(str(item) for item in value)
    return frozenset(chosen)


def result_boxes(result: Sequence[Mapping[str, Any]] | None, control: str) -> list[LabelledBox]:
    """(label, box in percent) of each rectangle of ``control`` in an LS result (rotations as their bounds)."""
    boxes: list[LabelledBox] = []
    for region in _regions(result, control):
        value = region["value"]
        labels = value.get("rectanglelabels") or value.get("labels") or []
        try:
            rect = PercentRect(
                float(value["x"]), float(value["y"]), float(value["width"]), float(value["height"]),
                float(value.get("rotation") or 0.0),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            continue
        box = rect.to_pixels(100.0, 100.0)
        for label in labels if isinstance(labels, list) else []:
            boxes.append((str(label), (box.x0, box.y0, box.x1, box.y1)))
    return boxes


# --- scores --------------------------------------------------------------------------------------------------


@dataclass
class ControlScore:
    """One control's score over the evaluated tasks: ``value`` is the primary metric (``metric``)."""

    control: str
    kind: str
    metric: str
    value: float
    tasks: int
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the registry and the report."""
        return {
            "control": self.control, "kind": self.kind, "metric": self.metric, "value": round(self.value, 6),
            "tasks": self.tasks, **{k: round(v, 6) for k, v in self.extra.items()},
        }  # fmt: skip


@dataclass
class EvalReport:
    """A model's scores on the held-out tasks; ``score`` is the mean of the per-control values."""

    model: str
    controls: list[ControlScore]
    tasks: int
    failed: int = 0

    @property
    def score(self) -> float:
        """Mean of the per-control primary metrics (0 when nothing was scored)."""
        return sum(c.value for c in self.controls) / len(self.controls) if self.controls else 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the registry and the report."""
        return {
            "model": self.model, "score": round(self.score, 6), "tasks": self.tasks, "failed": self.failed,
            "controls": [c.to_json() for c in self.controls],
        }  # fmt: skip


def score_control(
    spec: ControlSpec,
    predicted: Sequence[Sequence[Mapping[str, Any]] | None],
    gold: Sequence[Sequence[Mapping[str, Any]]],
    *,
    iou: float = 0.5,
) -> ControlScore | None:
    """Score one control over tasks: ``predicted[i]`` and ``gold[i]`` are LS results of task i (None: no answer).

    Returns None for controls that are not scored (review).
    """
    n = len(gold)
    if spec.kind == "grounding":
        tp = fp = fn = 0
        ious: list[float] = []
        for pred, ref in zip(predicted, gold, strict=True):
            p_boxes, g_boxes = result_boxes(pred, spec.name), result_boxes(ref, spec.name)
            hits, matched = match_boxes(p_boxes, g_boxes, iou)
            tp, fp, fn = tp + hits, fp + len(p_boxes) - hits, fn + len(g_boxes) - hits
            ious.extend(matched)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if tp + fp + fn == 0:
            f1 = 1.0  # nothing to find and nothing found
        extra = {"precision": precision, "recall": recall, "mean_iou": sum(ious) / len(ious) if ious else 0.0}
        return ControlScore(spec.name, spec.kind, f"f1@iou{iou:g}", f1, n, extra)
    if spec.kind == "choices":
        right = sum(
            result_choices(p, spec.name) == result_choices(g, spec.name) for p, g in zip(predicted, gold, strict=True)
        )
        return ControlScore(spec.name, spec.kind, "accuracy", right / n if n else 0.0, n)
    if spec.kind in TEXT_KINDS:
        scores, exact = [], 0
        for pred, ref in zip(predicted, gold, strict=True):
            hyp, target = normalize_answer(result_text(pred, spec.name)), normalize_answer(result_text(ref, spec.name))
            scores.append(chrf(hyp, target))
            exact += hyp == target
        return ControlScore(
            spec.name, spec.kind, "chrf", sum(scores) / n if n else 0.0, n, {"exact_match": exact / n if n else 0.0}
        )
    return None


def score_results(
    model: str,
    config: LabelConfig,
    predicted: Sequence[Sequence[Mapping[str, Any]] | None],
    gold: Sequence[Sequence[Mapping[str, Any]]],
    *,
    iou: float = 0.5,
) -> EvalReport:
    """Score a model's LS results against the reviewed results, control by control (see the module docstring)."""
    controls = [
        score for spec in config.controls if (score := score_control(spec, predicted, gold, iou=iou)) is not None
    ]
    failed = sum(p is None for p in predicted)
    return EvalReport(model, controls, len(gold), failed)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and the sentence explaining it (stored on the run)."""

    promote: bool
    reason: str
    candidate: float
    current: float
    margin: float


def gate(candidate: EvalReport, current: EvalReport, margin: float) -> GateDecision:
    """Promote unless the candidate scores below ``current - margin``, or nothing was held out to measure on.

    Example: candidate 0.95, current 0.25, margin 0 -> promote; candidate 0.25, current 0.97 -> refuse with
    ``"candidate 0.250 < current 0.970 - margin 0.000"``.
    """
    if candidate.tasks == 0 or not candidate.controls:
        return GateDecision(
            False, "no held-out reviewed tasks to evaluate on; not promoted", candidate.score, current.score, margin
        )
    c, a = candidate.score, current.score
    if c >= a - margin:
        return GateDecision(True, f"candidate {c:.3f} >= current {a:.3f} - margin {margin:.3f}", c, a, margin)
    return GateDecision(False, f"candidate {c:.3f} < current {a:.3f} - margin {margin:.3f}", c, a, margin)


# --- candidate versus current through the backend's predictor ---------------------------------------------------


@dataclass
class Comparison:
    """Both models' reports on the same held-out tasks."""

    candidate: EvalReport
    current: EvalReport
    task_ids: list[int]


def held_out_tasks(export_dir: Path, limit: int) -> list[dict[str, Any]]:
    """The raw Label Studio tasks of the export's val split, in val.jsonl order, at most ``limit``.

    Task ids come from the rows' ``labelloop.task_id`` metadata; the raw tasks from ``tasks.jsonl``, which the
    training job writes while the export reads Label Studio. Missing files give an empty list.
    """
    ids: list[int] = []
    try:
        with (export_dir / "val.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                meta = json.loads(line).get("labelloop") or {}
                task_id = meta.get("task_id")
                if isinstance(task_id, int) and task_id not in ids:
                    ids.append(task_id)
    except FileNotFoundError:
        return []
    wanted = set(ids[:limit])
    found: dict[int, dict[str, Any]] = {}
    try:
        with (export_dir / "tasks.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                raw = json.loads(line)
                if isinstance(raw, dict) and raw.get("id") in wanted:
                    found[int(raw["id"])] = raw
    except FileNotFoundError:
        return []
    return [found[task_id] for task_id in ids[:limit] if task_id in found]


def gold_results(tasks: Sequence[Mapping[str, Any]], config: LabelConfig) -> list[list[dict[str, Any]]]:
    """The reviewed result of each task: the annotation the exporter trained on (``select_annotation``).

    Raises:
        converters.errors.ConvertError: a task has no counting annotation (it could not have been exported).
    """
    from converters.annotations import select_annotation
    from converters.tasks import parse_task

    results = []
    for position, raw in enumerate(tasks):
        task = parse_task(raw, position)
        annotation = select_annotation(task, config)
        results.append(
            [
                {"from_name": r.from_name, "to_name": r.to_name, "type": r.type, "value": dict(r.value)}
                for r in annotation.regions
            ]
        )
    return results


def evaluate_candidate(
    settings: Settings,
    export_dir: Path,
    label_config: str,
    project: int,
    *,
    candidate: ModelVersion,
    current: ModelVersion | None,
    predictor: Predictor | None = None,
) -> Comparison:
    """Predict the held-out tasks with the candidate and with the current version (None: the base) and score both.

    The predictor is the backend's (a fresh one on its own holder when not given: the base model is loaded
    once and both adapters run on it), with no prediction cache, in batches of ``Settings.batch_size``.

    Raises:
        ml_backend.engines.base.EngineError: the engine failed or an adapter cannot be loaded.
        converters.errors.LabelConfigError: the label config cannot be used.
    """
    from ml_backend.prompts import read_label_config
    from ml_backend.swaps import adapter_ref

    tasks = held_out_tasks(export_dir, settings.eval_max_tasks)
    config = read_label_config(label_config, settings)
    gold = gold_results(tasks, config)
    ids = [int(t["id"]) for t in tasks]
    own = predictor is None
    holder = None
    if predictor is None:
        from ml_backend.holder import ModelHolder
        from ml_backend.predictor import Predictor

        holder = ModelHolder(settings)
        predictor = Predictor(settings, holder)
    try:
        reports = []
        for name, ref in (
            (candidate.id, adapter_ref(candidate)),
            (current.id if current else "base", adapter_ref(current) if current else None),
        ):
            started = time.monotonic()
            predictions = predictor.predict(tasks, config, project=project, adapter=ref) if tasks else []
            predicted = [p.result if p.ok else None for p in predictions]
            report = score_results(name, config, predicted, gold, iou=settings.eval_iou)
            log.info(
                "evaluation: %s on %s held-out task(s) of project %s: %.3f (%.1f s)",
                name, len(tasks), project, report.score, time.monotonic() - started,
            )  # fmt: skip
            reports.append(report)
    finally:
        if own:
            predictor.close()
            if holder is not None:
                holder.close()
    return Comparison(reports[0], reports[1], ids)
