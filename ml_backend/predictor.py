"""The one prediction path, shared by ``/predict``, the bulk job and the evaluator.

label config → prompts per control → images (fetched in parallel, the next batch while the engine runs) →
prediction cache → engine (batched, bounded concurrency) → regions (parsed, converted, scored) → one
:class:`~ml_backend.protocol.TaskPrediction` per task, in order.

Failure semantics, per task: an image that cannot be fetched or decoded, or a question missing from the task
data, gives that task a prediction with ``error`` set (no regions, never cached); the other tasks are still
predicted. A marks detector failure on an image (:mod:`ml_backend.marks`: a grounding control with the marks
label gets the detector's boxes) is logged and counted, and that task is predicted without detected marks.
Tasks not reached before ``deadline`` come back ``deferred``. For the whole call: a label config
that cannot be used raises :class:`~converters.errors.LabelConfigError`; an engine failure raises
:class:`~ml_backend.engines.base.EngineError` (batches finished before it are already cached).

Scores: a text answer scores ``exp(mean token log-prob)``; a box the same over the tokens that wrote it (a
detected mark: the detector's score); a single-choice control the chosen option's share of the options'
probability (softmax of their exact log-likelihoods); a multiple-choice one, whose answer is generated (as
trained: the options joined by ", "), its answer's score; a control is the mean of its regions (its answer's
score when it found no box); the task is its lowest control, so one doubtful control sends the task to review
first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import SecretStr

from converters.errors import ConvertError, ImageError
from converters.images import ImageOptions, prepare_image
from converters.label_config import ControlSpec, LabelConfig
from converters.media import MediaConfig, MediaFetcher, safe_url
from ml_backend.cache import PredictionCache, config_hash
from ml_backend.engines.base import AdapterRef, Generation, GenerationRequest
from ml_backend.holder import ACTIVE, ActiveAdapter, Lease, ModelHolder
from ml_backend.marks import MarksPlan, mark_regions, marks_on, marks_plan
from ml_backend.prompts import Ask, asks_for, predictable, read_label_config
from ml_backend.protocol import TaskInput, TaskPrediction, parse_task
from ml_backend.regions import (
    BoxRegion,
    ChoiceRegion,
    Region,
    TextRegion,
    answer_score,
    boxes_from_generation,
    choices_from_text,
    clean_answer,
    option_probabilities,
)

if TYPE_CHECKING:
    from PIL import Image

    from converters.marks.adapter import DetectedMark
    from converters.tasks import Task
    from ml_backend.metrics import Metrics
    from ml_backend.settings import Family, Settings

log = logging.getLogger(__name__)

__all__ = ["ACTIVE", "ImageLoader", "LabelStudioAccess", "Predictor"]

T = TypeVar("T")


@dataclass(frozen=True)
class LabelStudioAccess:
    """How to reach one Label Studio for images: its URL and the token ``/setup`` sent (the legacy token of
    the project's creator). Settings win over both: a configured ``ls_url``/``ls_api_key`` (e.g. a personal
    access token, needed when legacy tokens are disabled) is used when set."""

    hostname: str | None = None
    token: SecretStr | None = None


class ImageLoader:
    """Images for tasks: :class:`converters.media.MediaFetcher` (URL policy, tokens, caps) plus safe decoding
    (size checked before decoding, EXIF orientation applied, RGB). One fetcher per Label Studio and token,
    kept for reuse (at most 16). Thread-safe."""

    def __init__(self, settings: Settings, **fetcher_options: Any) -> None:
        """``fetcher_options`` go to every MediaFetcher (tests pass ``transport``/``resolver``)."""
        self._settings = settings
        self._options = fetcher_options
        self._base = MediaConfig(
            ls_url=settings.ls_url,
            api_key=settings.ls_api_key,
            local_files_root=settings.ls_local_files_root,
            media_dir=settings.ls_media_dir,
            allowed_hosts=tuple(settings.allowed_hosts),
            max_bytes=settings.max_image_bytes,
            timeout=settings.fetch_timeout,
        )
        self._decode = ImageOptions(max_side=0, max_pixels=settings.max_image_pixels, draft=False)
        self._fetchers: OrderedDict[tuple[str | None, str], MediaFetcher] = OrderedDict()
        self._lock = threading.Lock()

    def fetcher(self, access: LabelStudioAccess | None = None) -> MediaFetcher:
        """The fetcher for ``access`` (settings first, then what ``/setup`` sent)."""
        hostname = access.hostname if access is not None and self._base.ls_url is None else None
        token = access.token if access is not None and self._base.api_key is None else None
        secret = token.get_secret_value() if token is not None else ""
        key = (hostname, hashlib.sha256(secret.encode()).hexdigest() if secret else "")
        with self._lock:
            fetcher = self._fetchers.get(key)
            if fetcher is not None:
                self._fetchers.move_to_end(key)
                return fetcher
        update: dict[str, Any] = {}
        if hostname:
            update["ls_url"] = hostname
        if token is not None:
            update["api_key"] = token
        config = self._base.model_copy(update=update) if update else self._base
        with self._lock:
            fetcher = self._fetchers.get(key)
            if fetcher is None:
                fetcher = self._fetchers[key] = MediaFetcher(config, **self._options)
                while len(self._fetchers) > 16:
                    self._fetchers.popitem(last=False)[1].close()
            return fetcher

    def load(self, url: str, access: LabelStudioAccess | None = None) -> Image.Image:
        """The decoded RGB image behind ``url``, EXIF orientation applied (the size Label Studio shows).

        Raises:
            ImageError: refused by the URL policy, unreachable, too large, not an image, a decompression bomb,
                truncated; the message names the URL (secrets masked) and the reason.
        """
        data = self.fetcher(access).fetch(url)
        source = url if "?" not in url and "@" not in url else safe_url(url)  # nothing to mask: skip the parse
        return prepare_image(data, source=source, options=self._decode).image

    def close(self) -> None:
        """Close every fetcher's HTTP client."""
        with self._lock:
            for fetcher in self._fetchers.values():
                fetcher.close()
            self._fetchers.clear()


@dataclass
class _Work:
    """One task on its way through a batch."""

    index: int
    task: TaskInput
    image: Image.Image | None = None
    error: str | None = None
    marks: tuple[DetectedMark, ...] | None = None  # None: not detected (no marks control, or the detector failed)


class _Loading:
    """One batch's images on their way: those read already, and the image threads' futures for the others."""

    def __init__(self, batch: list[int]) -> None:
        self.batch = batch
        self.done: dict[int, _Work] = {}
        self.reads: list[Future[tuple[list[_Work], float]]] = []  # groups of local images
        self.downloads: dict[int, Future[_Work]] = {}
        self.seconds = 0.0  # how long reading the local images took (the slowest group)

    def collect(self) -> list[_Work]:
        """Every image of the batch (waiting for the threads), in batch order."""
        for future in self.reads:
            items, seconds = future.result()
            self.seconds = max(self.seconds, seconds)
            self.done.update((item.index, item) for item in items)
        self.done.update((index, future.result()) for index, future in self.downloads.items())
        return [self.done[index] for index in self.batch]


class Predictor:
    """Label config + tasks → predictions. Thread-safe; one per process, shared by every request."""

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        images: ImageLoader | None = None,
        cache: PredictionCache | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._holder = holder
        self._images = images or ImageLoader(settings)
        self._cache = cache
        self._metrics = metrics
        self._semaphore = threading.BoundedSemaphore(settings.max_concurrency)
        self._pool = ThreadPoolExecutor(settings.fetch_workers, thread_name_prefix="labelloop-images")
        self._decoders = max(1, min(settings.fetch_workers, _cores() - 1))  # local images read in parallel
        self._reported: set[str] = set()
        self._reported_lock = threading.Lock()
        self._local = threading.local()
        # Settings that change what the model is asked or how its answer is read are part of every cache key, so
        # a changed prompt or limit never serves an answer given under the old one.
        self._answer_settings = json.dumps(
            [settings.prompts, settings.max_new_tokens, settings.image_min_pixels, settings.image_max_pixels,
             settings.review_control, settings.review_accept, settings.redact_label, settings.marks_label],
            sort_keys=True,
        )  # fmt: skip

    @property
    def holder(self) -> ModelHolder:
        """The model holder this predictor runs on."""
        return self._holder

    def engine_seconds(self) -> float:
        """Seconds this thread spent inside the engine during its last :meth:`predict` call."""
        return float(getattr(self._local, "engine_seconds", 0.0))

    def predict(
        self,
        tasks: Sequence[Mapping[str, Any] | Task | TaskInput],
        label_config: str | LabelConfig,
        *,
        project: int | None,
        adapter: AdapterRef | ActiveAdapter | None = ACTIVE,
        access: LabelStudioAccess | None = None,
        deadline: float | None = None,
    ) -> list[TaskPrediction]:
        """Predict every task; one TaskPrediction per task, in order.

        Args:
            tasks: LS task dicts (``id``, ``data``), :class:`converters.tasks.Task` or :class:`TaskInput`.
            label_config: the project's label config XML, or an already parsed :class:`LabelConfig`.
            project: the Label Studio project (selects its active adapter); None for the base model.
            adapter: ``ACTIVE`` for the project's active adapter; an explicit AdapterRef, or None for the base
                model, e.g. to evaluate a candidate that is not active yet.
            access: Label Studio URL and token from ``/setup``, for images on Label Studio.
            deadline: a ``time.monotonic()`` instant by which to answer: a batch is started only if, at the pace
                of the previous one, it ends before it; the tasks left come back ``deferred``.

        Raises:
            converters.errors.LabelConfigError: the label config cannot be used.
            ml_backend.protocol.RequestError: a task is not an object with an integer ``id`` and ``data``.
            ml_backend.engines.base.EngineError: the engine failed.
        """
        self._local.engine_seconds = 0.0
        inputs = [_as_input(task, index) for index, task in enumerate(tasks)]
        if isinstance(label_config, LabelConfig):
            config, xml = label_config, label_config.xml
        else:
            xml = label_config
            config = read_label_config(xml, self._settings)
        specs = predictable(config)
        chash = config_hash(xml + self._answer_settings)
        self._report_skipped(config, chash)
        marks = marks_plan(config, specs, enabled=self._settings.marks_detect)
        with self._holder.lease(project, adapter) as lease:
            results = self._run(
                inputs, config=config, specs=specs, chash=marks.cache_tag(chash), lease=lease, access=access,
                deadline=deadline, marks=marks,
            )  # fmt: skip
        if self._metrics is not None:
            outcomes = Counter(_outcome(prediction) for prediction in results)
            for outcome, count in outcomes.items():
                self._metrics.predictions.labels(outcome=outcome).inc(count)
        return results

    def close(self) -> None:
        """Stop the image threads and close the HTTP clients."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._images.close()

    # --- the pipeline --------------------------------------------------------------------------------------

    def _run(
        self,
        inputs: list[TaskInput],
        *,
        config: LabelConfig,
        specs: list[ControlSpec],
        chash: str,
        lease: Lease,
        access: LabelStudioAccess | None,
        deadline: float | None,
        marks: MarksPlan,
    ) -> list[TaskPrediction]:
        results: dict[int, TaskPrediction] = {}
        keys: list[str] = []
        if self._cache is not None:
            keys = [self._cache.key(task, chash, lease.model_version) for task in inputs]
            for index, hit in enumerate(self._cache.get_many(keys)):
                if hit is not None:
                    results[index] = hit
        todo = [index for index in range(len(inputs)) if index not in results]
        size = self._settings.batch_size
        batches = [todo[start : start + size] for start in range(0, len(todo), size)]
        detect = marks.active
        loading = self._fetch(batches[0], inputs, specs, access, ahead=False, detect=detect) if batches else None
        new: list[tuple[str, TaskPrediction]] = []
        last_batch = 0.0  # seconds the previous batch took: a batch is only started if it can end in time
        last_engine: float | None = None  # seconds the engine took on the previous batch
        for number in range(len(batches)):
            started = time.monotonic()
            if deadline is not None and started + last_batch > deadline:
                for index in (i for later in batches[number:] for i in later):
                    results[index] = TaskPrediction(inputs[index].id, model_version=lease.model_version, deferred=True)
                log.warning("predictor: deadline reached, %d task(s) deferred", sum(map(len, batches[number:])))
                break
            assert loading is not None
            work = loading.collect()
            if number + 1 < len(batches):
                # Load the next batch's images on the image threads while the engine runs this one, unless the
                # engine proved quicker than the loading: then there is nothing to overlap, and the hops to the
                # threads cost more than they save (thread switches; a no-op or very fast engine).
                ahead = last_engine is None or last_engine > loading.seconds
                loading = self._fetch(batches[number + 1], inputs, specs, access, ahead=ahead, detect=detect)
            engine_before = self.engine_seconds()
            predictions = self._predict_batch(work, config, specs, lease, marks)
            last_engine = self.engine_seconds() - engine_before
            for item, prediction in zip(work, predictions, strict=True):
                results[item.index] = prediction
            new.extend((keys[item.index], p) for item, p in zip(work, predictions, strict=True) if keys)
            last_batch = time.monotonic() - started
        if self._cache is not None:
            self._cache.put_many(new)  # one round trip for the whole call
        return [results[index] for index in range(len(inputs))]

    def _fetch(
        self,
        batch: list[int],
        inputs: list[TaskInput],
        specs: list[ControlSpec],
        access: LabelStudioAccess | None,
        *,
        ahead: bool,
        detect: bool = False,
    ) -> _Loading:
        """Start loading the batch's images (:meth:`_Loading.collect` waits for them).

        Downloads wait on the network: each runs on an image thread, all in parallel. Reading and decoding a local
        file is CPU work: the local images are split into at most one group per spare core (``_decoders``, cores
        minus one), so they are decoded in parallel where there are cores for it and cost no thread hop per image
        where there are not. Without ``ahead`` (a batch needed now) one group is read right here; ``ahead`` (while
        the engine runs the previous batch), every group is read on an image thread. With ``detect``, the marks
        detector runs on each image where it was decoded (:mod:`ml_backend.marks`).
        """
        data_key = next((spec.data_key for spec in specs if spec.data_key), None)
        fetcher = self._images.fetcher(access)
        loading = _Loading(batch)
        local: list[int] = []
        for index in batch:
            url = inputs[index].data.get(data_key) if data_key else None
            if isinstance(url, str) and fetcher.downloads(url):
                loading.downloads[index] = self._pool.submit(self._load, index, inputs[index], data_key, access, detect)
            else:
                local.append(index)
        count = min(len(local), self._decoders)
        groups = [local[start::count] for start in range(count)]
        here = groups.pop(0) if groups and not ahead else []
        loading.reads = [self._pool.submit(self._load_all, group, inputs, data_key, access, detect) for group in groups]
        if here:
            items, loading.seconds = self._load_all(here, inputs, data_key, access, detect)
            loading.done.update((item.index, item) for item in items)
        return loading

    def _load_all(
        self, batch: list[int], inputs: list[TaskInput], data_key: str | None, access: LabelStudioAccess | None,
        detect: bool = False,
    ) -> tuple[list[_Work], float]:  # fmt: skip
        """The batch's images, one after the other, and the seconds they took."""
        started = time.perf_counter()
        items = [self._load(index, inputs[index], data_key, access, detect) for index in batch]
        return items, time.perf_counter() - started

    def _load(
        self, index: int, task: TaskInput, data_key: str | None, access: LabelStudioAccess | None,
        detect: bool = False,
    ) -> _Work:  # fmt: skip
        work = _Work(index, task)
        url = task.data.get(data_key) if data_key else None
        if not isinstance(url, str) or not url.strip():
            shown = "missing" if data_key not in task.data else f"expected an image URL, got {type(url).__name__}"
            work.error = f"data.{data_key}: {shown}"
            self._count_image_error("image_missing")
            return work
        try:
            work.image = self._images.load(url, access)
        except ImageError as exc:
            work.error = str(exc)
            self._count_image_error(exc.reason)
            return work
        if detect:
            work.marks = marks_on(work.image, task.id, self._metrics)
        return work

    def _count_image_error(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.image_errors.labels(reason=reason).inc()

    def _predict_batch(
        self, work: list[_Work], config: LabelConfig, specs: list[ControlSpec], lease: Lease, marks: MarksPlan
    ) -> list[TaskPrediction]:
        family = lease.engine.family
        tuned = lease.adapter is not None  # a labelloop adapter is asked exactly as its training rows ask
        asks: dict[int, list[Ask]] = {}
        for item in work:
            if item.error is None:
                try:
                    asks[item.index] = [
                        ask
                        for spec in marks.to_ask(specs, tuned=tuned)
                        for ask in asks_for(spec, item.task.data, family, config=config, tuned=tuned)
                    ]
                except ConvertError as exc:
                    item.error = str(exc)
            if item.error is not None:
                log.warning("predictor: task %s not predicted: %s", item.task.id, item.error)
        answers = self._generate(work, asks, lease)
        scored = self._score_options(work, asks, lease)
        return [
            self._assemble(item, config, specs, answers=answers, scored=scored, lease=lease, family=family, marks=marks)
            for item in work
        ]

    def _generate(
        self, work: list[_Work], asks: dict[int, list[Ask]], lease: Lease
    ) -> dict[tuple[int, str], list[tuple[Ask, Generation]]]:
        """Every generating ask of the batch in one engine call, grouped by (task index, control)."""
        pairs = [(item, ask) for item in work for ask in asks.get(item.index, []) if not ask.options]
        requests = [
            GenerationRequest(item.image, ask.prompt, self._settings.max_new_tokens, lease.adapter)  # type: ignore[arg-type]
            for item, ask in pairs
        ]
        generations = self._engine("generate", lease.engine.generate, requests) if requests else []
        answers: dict[tuple[int, str], list[tuple[Ask, Generation]]] = {}
        for (item, ask), generation in zip(pairs, generations, strict=True):
            answers.setdefault((item.index, ask.control.name), []).append((ask, generation))
        return answers

    def _score_options(
        self, work: list[_Work], asks: dict[int, list[Ask]], lease: Lease
    ) -> dict[tuple[int, str], list[float]]:
        """The options' log-likelihoods of every Choices ask, by (task index, control)."""
        scored: dict[tuple[int, str], list[float]] = {}
        for item in work:
            for ask in asks.get(item.index, []):
                if ask.options:
                    request = GenerationRequest(item.image, ask.prompt, 1, lease.adapter)  # type: ignore[arg-type]
                    scored[(item.index, ask.control.name)] = self._engine(
                        "score_options", lease.engine.score_options, request, ask.options
                    )
        return scored

    def _assemble(
        self,
        item: _Work,
        config: LabelConfig,
        specs: list[ControlSpec],
        *,
        answers: dict[tuple[int, str], list[tuple[Ask, Generation]]],
        scored: dict[tuple[int, str], list[float]],
        lease: Lease,
        family: Family,
        marks: MarksPlan,
    ) -> TaskPrediction:
        """One task's prediction from its answers, option scores and detected marks."""
        if item.error is not None:
            return TaskPrediction(item.task.id, model_version=lease.model_version, error=item.error)
        regions: list[Region] = []
        control_scores: dict[str, float | None] = {}
        for spec in specs:
            key = (item.index, spec.name)
            if key in scored:
                region, score = _choice_region(spec, scored[key])
                regions.append(region)
            elif key in answers or spec.name in marks.controls:
                found, score = _answer_regions(config, marks.model_spec(spec), answers.get(key), item, family)
                if spec.name in marks.controls:
                    if item.marks is None and key not in answers:
                        continue  # the detector failed, and the model was not asked
                    found, score = _with_marks(found, score, spec, item, marks.label)
                regions.extend(found)
            else:
                continue
            control_scores[spec.name] = score
        known = [score for score in control_scores.values() if score is not None]
        return TaskPrediction(
            task_id=item.task.id,
            regions=tuple(regions),
            score=min(known) if known else None,
            model_version=lease.model_version,
            control_scores=control_scores,
        )

    def _engine(self, op: str, call: Callable[..., T], *args: Any) -> T:
        """Run one engine call under the concurrency bound, timing it."""
        metrics = self._metrics
        if metrics is not None:
            metrics.engine_waiting.inc()
        with self._semaphore:
            if metrics is not None:
                metrics.engine_waiting.dec()
                metrics.engine_in_flight.inc()
            started = time.perf_counter()
            try:
                return call(*args)
            finally:
                elapsed = time.perf_counter() - started
                self._local.engine_seconds = self.engine_seconds() + elapsed
                if metrics is not None:
                    metrics.engine_in_flight.dec()
                    metrics.engine_seconds.labels(op=op).observe(elapsed)

    def _report_skipped(self, config: LabelConfig, key: str) -> None:
        """Log the controls that are not predicted, once per label config per process."""
        if not config.skipped:
            return
        with self._reported_lock:
            if key in self._reported:
                return
            self._reported.add(key)
        for skipped in config.skipped:
            log.warning("predictor: not predicting %s %r: %s", skipped.tag, skipped.name, skipped.reason)
            if self._metrics is not None:
                self._metrics.skipped_controls.labels(tag=skipped.tag).inc()


def _cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _outcome(prediction: TaskPrediction) -> str:
    if prediction.cached:
        return "cached"
    if prediction.deferred:
        return "deferred"
    return "failed" if prediction.error else "predicted"


def _as_input(task: Mapping[str, Any] | Task | TaskInput, index: int) -> TaskInput:
    if isinstance(task, TaskInput):
        return task
    if isinstance(task, Mapping):
        return parse_task(task, f"tasks[{index}]")
    return TaskInput(task.id, task.data, task.project)


def _region_id(task_id: int, control: str, index: int) -> str:
    return hashlib.sha1(f"{task_id}:{control}:{index}".encode(), usedforsecurity=False).hexdigest()[:10]


def _mean(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(sum(known) / len(known), 6) if known else None


def _answer_regions(
    config: LabelConfig, spec: ControlSpec, answers: list[tuple[Ask, Generation]] | None, item: _Work, family: Family
) -> tuple[list[Region], float | None]:
    """Regions of a text, grounding or multiple-choice control from its generations, and the control's score
    (no regions, no score when the model was not asked: a grounding control the marks detector fills alone)."""
    assert item.image is not None
    if not answers:
        return [], None
    to_name = spec.image or ""
    if spec.kind == "choices":  # choice="multiple": generated like its training answer, "a, b"
        _, generation = answers[0]
        chosen = choices_from_text(generation.text, spec.labels)
        score = answer_score(generation)
        return ([ChoiceRegion(spec.name, to_name, chosen, score)] if chosen else []), score
    if spec.kind == "grounding":
        _, generation = answers[0]
        boxes = boxes_from_generation(
            generation,
            family=family,
            labels=config.box_labels(spec),
            from_name=spec.name,
            to_name=to_name,
            original_size=item.image.size,
            id_prefix="",
        )
        boxes = [replace(box, region_id=_region_id(item.task.id, spec.name, n)) for n, box in enumerate(boxes)]
        score = _mean([box.score for box in boxes]) if boxes else answer_score(generation)
        return list(boxes), score
    ordered = sorted(answers, key=lambda pair: pair[0].index)
    texts = tuple(clean_answer(generation.text) for _, generation in ordered)
    score = _mean([answer_score(generation) for _, generation in ordered])
    if not any(texts):
        return [], score
    return [TextRegion(spec.name, to_name, texts, score)], score


def _with_marks(
    found: list[Region], score: float | None, spec: ControlSpec, item: _Work, label: str
) -> tuple[list[Region], float | None]:
    """A detector-filled grounding control: the model's boxes plus one per detected mark, re-numbered; the
    control's score is the mean of all its boxes (unchanged when no mark was detected)."""
    assert item.image is not None
    detected = mark_regions(item.marks or (), label=label, spec=spec, original_size=item.image.size)
    if not detected:
        return found, score
    boxes = [*found, *detected]
    numbered: list[Region] = [
        replace(box, region_id=_region_id(item.task.id, spec.name, n)) if isinstance(box, BoxRegion) else box
        for n, box in enumerate(boxes)
    ]
    return numbered, _mean([box.score for box in boxes])


def _choice_region(spec: ControlSpec, logprobs: list[float]) -> tuple[Region, float | None]:
    """The chosen option of a single-choice control: the most likely one, scored by its share of the options'
    probability."""
    shares = option_probabilities(logprobs)
    best = max(range(len(shares)), key=shares.__getitem__)
    score = round(shares[best], 6) if math.isfinite(shares[best]) else None
    return ChoiceRegion(spec.name, spec.image or "", (spec.labels[best],), score), score
