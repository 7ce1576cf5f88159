"""RQ job ``train_run(run_id)``: export -> ms-swift LoRA SFT -> evaluation -> gate -> promote (or reject).

The job takes only the run id; everything else is in the registry (the run), Redis (the review counts, the
cancel flag) and Settings (built by the worker entry, ``labelloop worker``, and handed over with
:func:`use_settings`). Progress is in ``job.meta`` (``stage``, ``step``, ``max_steps``, ``loss``) and in the
registry's run status (exporting, training, evaluating, then promoted/rejected/failed/cancelled).

Run directory ``<data_dir>/runs/<run id>/``: ``export/`` (the exporter's output and ``tasks.jsonl``, the raw
tasks as read from Label Studio), ``swift/`` (ms-swift's output), ``train.log``, ``eval.json``, ``report.html``.

What happens on failure, by cause:

- Label Studio unreachable during the export: the run is ``retrying`` and the exception propagates so RQ's
  Retry policy runs the job again (``train_retries`` times, ``retry_delay`` doubling); after the last attempt
  it is ``failed``. The reason is recorded each time.
- ``swift sft`` fails or times out: ``failed``, with the tail of its log in the registry; not retried.
- cancelled (``labelloop runs cancel``): ``cancelled``; the process group is killed.
- the worker dies (SIGKILL, OOM): the heartbeat stops; whoever next looks (a trigger, the periodic
  reconciliation, ``labelloop worker`` at start) marks the run failed. Nothing is promoted: the active pointer
  only moves after the adapter was stored complete and the gate passed.
- anything else: ``failed`` with the exception's message, and the exception propagates (RQ keeps the traceback).

In every failed or cancelled case the reviews the run took go back to the project's count, and the
single-flight lock is released (kept only while a retry is pending).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_backend.events import RUNNING, WAITING, Loop
from ml_backend.exceptions import LabelloopError
from ml_backend.registry import Registry, RegistryError, RunStatus, TrainingRun
from ml_backend.reviews import LabelStudioUnavailableError, ls_client
from ml_backend.settings import Settings, load_settings

log = logging.getLogger(__name__)

_settings: Settings | None = None


def use_settings(settings: Settings) -> None:
    """Hand the worker's Settings to the jobs (called by the worker entry before it starts working)."""
    global _settings  # noqa: PLW0603 - the worker entry is the one writer, before any job runs
    _settings = settings


def job_settings() -> Settings:
    """The Settings given by :func:`use_settings`, else built from the environment (the worker is a process edge)."""
    return _settings if _settings is not None else load_settings()


class RunCancelledError(LabelloopError):
    """The run's cancel flag was seen between stages."""


class NothingToTrainError(LabelloopError):
    """The export wrote no training row; the message says why the tasks were dropped."""


@dataclass
class Exported:
    """What the export step produced."""

    out_dir: Path
    train: Path
    val: Path
    label_config: str
    dataset_hash: str
    train_rows: int
    val_rows: int
    tasks_written: int
    report: dict[str, Any] = field(default_factory=dict)


def train_run(run_id: str) -> dict[str, Any]:
    """Train, evaluate and gate run ``run_id`` (see the module docstring for failures).

    Returns:
        ``{"run": id, "status": final status, "version": id or None, ...}``.
    """
    settings = job_settings()
    loop = Loop.from_settings(settings, timeout=30.0)
    return _Job(settings, loop, run_id).run()


class _Heartbeat:
    """Refreshes ``<prefix>:run:<id>:alive`` every ``heartbeat_ttl / 3`` seconds from a daemon thread."""

    def __init__(self, loop: Loop, run: TrainingRun) -> None:
        self.loop = loop
        self.run = run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run.id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.loop.heartbeat(self.run.id, self.run.project)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.loop.redis.delete(self.loop.alive_key(self.run.id))

    def _beat(self) -> None:
        interval = max(1.0, self.loop.settings.heartbeat_ttl / 3)
        while not self._stop.wait(interval):
            try:
                self.loop.heartbeat(self.run.id, self.run.project)
            except Exception:  # Redis blip: the next beat may work; the TTL gives two more chances
                log.warning("train %s: heartbeat failed", self.run.id, exc_info=True)


class _Job:
    def __init__(self, settings: Settings, loop: Loop, run_id: str) -> None:
        self.settings = settings
        self.loop = loop
        self.registry: Registry = loop.registry
        self.run_id = run_id
        self.job = _current_job()
        self._meta_at = 0.0

    # --- bookkeeping ------------------------------------------------------------------------------------------

    def meta(self, *, force: bool = False, **values: Any) -> None:
        if self.job is None:
            return
        self.job.meta.update(values)
        now = time.monotonic()
        if force or now - self._meta_at > 2.0:
            self._meta_at = now
            try:
                self.job.save_meta()
            except Exception:
                log.debug("train %s: could not save job meta", self.run_id, exc_info=True)

    def stage(self, status: RunStatus, expect: set[RunStatus], **fields: Any) -> TrainingRun:
        if self.loop.is_cancelled(self.run_id):
            raise RunCancelledError("cancelled by `labelloop runs cancel`")
        run = self.registry.update_run(self.run_id, expect=expect, status=status, **fields)
        self.meta(force=True, stage=status.value)
        log.info("train %s: %s", self.run_id, status.value)
        return run

    # --- the job ------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        run = self.registry.get_run(self.run_id)
        if run.status in RUNNING:
            # RQ re-ran a job whose worker died: the run's heartbeat is gone, so it is failed, not resumed.
            self.loop.reap(run)
            return {"run": run.id, "status": self.registry.get_run(run.id).status.value, "skipped": True}
        if run.status not in WAITING:
            log.info("train %s: is %s; nothing to do", run.id, run.status.value)
            return {"run": run.id, "status": run.status.value, "skipped": True}
        final: dict[str, Any] = {"run": run.id}
        retrying = succeeded = False
        with _Heartbeat(self.loop, run):
            try:
                run = self.stage(RunStatus.EXPORTING, set(WAITING), attempts=run.attempts + 1, error=None)
                self.loop.counter.take(run.project)
                final.update(self._train(run))
                self.loop.counter.commit(run.project)
                succeeded = True
            except BaseException as exc:
                retrying = self._fail(run, exc)
                if retrying or isinstance(exc, LabelStudioUnavailableError) or not isinstance(exc, LabelloopError):
                    raise  # RQ retries (or records the last attempt as failed, with the traceback for bugs)
                final["status"] = self.registry.get_run(run.id).status.value
            finally:
                self._write_report()
                if not retrying:
                    self.loop.release_lock(run.project, run.id)
                    self.loop.redis.delete(self.loop.cancel_key(run.id))
                if succeeded:  # after a failure, the next event or tick decides (no retraining in a tight loop)
                    self._next_decision(run.project)
        return final

    def _fail(self, run: TrainingRun, exc: BaseException) -> bool:
        """Record why the run stopped; True when RQ will retry it."""
        from ml_backend.training import TrainingCancelledError, TrainingError

        retries_left = int(getattr(self.job, "retries_left", 0) or 0)
        tail: str | None = None
        if isinstance(exc, RunCancelledError | TrainingCancelledError):
            status, error = RunStatus.CANCELLED, "cancelled by `labelloop runs cancel`"
            tail = getattr(exc, "log_tail", None)
        elif isinstance(exc, LabelStudioUnavailableError) and retries_left > 0:
            delays = self.loop.retry_delays()
            delay = delays[min(len(delays) - retries_left, len(delays) - 1)] if delays else 0
            attempt = self.registry.get_run(self.run_id).attempts
            status, error = RunStatus.RETRYING, f"{exc} (attempt {attempt}; RQ retries in {delay} s)"
        elif isinstance(exc, TrainingError):
            status, error, tail = RunStatus.FAILED, str(exc).split("\n", 1)[0], exc.log_tail
        elif isinstance(exc, LabelloopError):
            status, error = RunStatus.FAILED, str(exc)
        else:
            status, error = RunStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}"
        try:
            self.registry.update_run(
                self.run_id, expect=set(RUNNING | WAITING), status=status, error=error, log_tail=tail or self._tail()
            )
        except RegistryError:
            log.warning("train %s: not marked %s: it changed meanwhile", self.run_id, status.value)
        self.loop.counter.restore(run.project)
        self.meta(force=True, stage=status.value, error=error)
        level = logging.WARNING if status is not RunStatus.FAILED else logging.ERROR
        log.log(level, "train %s: %s: %s", self.run_id, status.value, error)
        return status is RunStatus.RETRYING

    def _tail(self) -> str | None:
        from ml_backend.training import log_tail

        run = self.registry.get_run(self.run_id)
        return log_tail(Path(run.run_dir) / "train.log") or None

    def _next_decision(self, project: int) -> None:
        """Reviews that arrived during training may already call for the next run."""
        try:
            if self.loop.counter.pending(project) >= self.settings.min_new_reviews:
                self.loop.request_decision(project)
        except Exception:
            log.warning("train %s: could not queue the next decision", self.run_id, exc_info=True)

    def _write_report(self) -> None:
        try:
            from ml_backend.run_report import write_report

            write_report(self.registry, self.registry.get_run(self.run_id))
        except Exception:
            log.warning("train %s: could not write the report", self.run_id, exc_info=True)

    def _train(self, run: TrainingRun) -> dict[str, Any]:
        from ml_backend.evaluation import evaluate_candidate, gate
        from ml_backend.training import Progress, run_sft

        run_dir = Path(run.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        clock = time.monotonic()
        exported = self._export(run, run_dir / "export")
        timings["export"] = time.monotonic() - clock
        args = training_args(self.settings)
        run = self.stage(
            RunStatus.TRAINING,
            {RunStatus.EXPORTING},
            dataset_hash=exported.dataset_hash,
            dataset_size=exported.train_rows + exported.val_rows,
            args={**args, "export": {"train_rows": exported.train_rows, "val_rows": exported.val_rows,
                                     "tasks": exported.tasks_written}},
        )  # fmt: skip

        def progress(p: Progress) -> None:
            self.meta(step=p.step, max_steps=p.max_steps, loss=p.loss)

        result = run_sft(
            self.settings,
            exported.train,
            run_dir,
            cancelled=lambda: self.loop.is_cancelled(self.run_id),
            on_progress=progress,
            on_start=lambda pid: self.meta(force=True, pid=pid),
        )
        timings["train_wall"] = result.wall_seconds
        timings["train_runtime"] = result.train_runtime or 0.0
        clock = time.monotonic()
        version_id = self.registry.new_version_id(run.project)
        stored = self.registry.store_adapter(result.adapter_dir, version_id)
        version = self.registry.add_version(
            run.id, stored, version_id=version_id, dataset_hash=exported.dataset_hash,
            dataset_size=exported.train_rows + exported.val_rows, args=args,
        )  # fmt: skip
        run = self.stage(RunStatus.EVALUATING, {RunStatus.TRAINING})
        timings["store_adapter"] = time.monotonic() - clock
        clock = time.monotonic()
        current = self.registry.active(run.project)
        comparison = evaluate_candidate(
            self.settings, exported.out_dir, exported.label_config, run.project, candidate=version, current=current
        )
        decision = gate(comparison.candidate, comparison.current, self.settings.promote_margin)
        timings["evaluate"] = time.monotonic() - clock
        metrics = {
            "candidate": comparison.candidate.to_json(),
            "current": comparison.current.to_json(),
            "current_version": current.id if current else None,
            "gate": {"promote": decision.promote, "reason": decision.reason, "margin": decision.margin},
            "train": {"global_step": result.global_step, "train_runtime": result.train_runtime,
                      "wall_seconds": round(result.wall_seconds, 3)},
            "timings": {key: round(value, 3) for key, value in timings.items()},
        }  # fmt: skip
        (run_dir / "eval.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        if self.loop.is_cancelled(self.run_id):
            raise RunCancelledError("cancelled by `labelloop runs cancel`")
        if decision.promote:
            self.registry.promote(version.id, metrics=metrics)
            self.loop.publish_activation(run.project, version.id)
            self.registry.prune(run.project, self.settings.keep_versions)
            status = RunStatus.PROMOTED
        else:
            self.registry.reject(version.id, reason=decision.reason, metrics=metrics)
            status = RunStatus.REJECTED
        self.meta(force=True, stage=status.value, version=version.id, gate=decision.reason)
        log.info("train %s: %s %s (%s)", run.id, status.value, version.id, decision.reason)
        return {"status": status.value, "version": version.id, "gate": decision.reason}

    def _export(self, run: TrainingRun, out_dir: Path) -> Exported:
        """Export the project through the exporter; Label Studio problems become LabelStudioUnavailableError."""
        from converters.errors import ConvertError
        from converters.export import export_tasks
        from converters.tasks import ProjectSource
        from ml_backend.exports import export_options, label_config, media_config, with_mark_detector

        client = ls_client(self.settings)
        source = ProjectSource(client, run.project)
        try:
            xml = source.label_config()
        except ConvertError as exc:
            raise LabelStudioUnavailableError(f"export: {exc}") from exc
        # The same Settings -> exporter mapping as `labelloop export`, so both export a project alike.
        config = label_config(self.settings, xml)
        options = with_mark_detector(export_options(self.settings, {"overwrite": True}), config)
        media = media_config(self.settings)
        out_dir.mkdir(parents=True, exist_ok=True)
        tee = _TeeSource(source, out_dir / "tasks.jsonl")
        started = time.monotonic()
        try:
            report = export_tasks(
                tee, config, out_dir, options=options, media=media,
                progress=lambda done, total: self.meta(exported=done, tasks=total),
            )  # fmt: skip
        except _SourceError as exc:
            raise LabelStudioUnavailableError(f"export: {exc}") from exc
        finally:
            tee.close()
        train, val = out_dir / "train.jsonl", out_dir / "val.jsonl"
        train_rows, val_rows = report.rows.get("train", 0), report.rows.get("val", 0)
        if train_rows == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.dropped_by_reason.items())) or "no tasks"
            raise NothingToTrainError(
                f"export: no training rows from {report.tasks_in} tasks of project {run.project} ({reasons})"
            )
        digest = hashlib.sha256()
        for path in (train, val):
            digest.update(path.read_bytes())
        log.info(
            "train %s: exported %s train / %s val rows from %s tasks in %.1f s",
            run.id, train_rows, val_rows, report.tasks_in, time.monotonic() - started,
        )  # fmt: skip
        return Exported(
            out_dir, train, val, xml, digest.hexdigest(), train_rows, val_rows, report.tasks_written,
            report.model_dump(mode="json"),
        )  # fmt: skip


class _SourceError(Exception):
    """A page of the project could not be read mid-export."""


class _TeeSource:
    """Iterates a task source and writes each raw task to a JSONL file (the evaluation reads the val tasks back)."""

    def __init__(self, source: Any, path: Path) -> None:
        self.source = source
        self.handle = path.open("w", encoding="utf-8")

    @property
    def description(self) -> str:
        return str(self.source.description)

    def count(self) -> int | None:
        count: int | None = self.source.count()
        return count

    def __iter__(self) -> Any:
        from converters.errors import ConvertError

        try:
            for raw in self.source:
                self.handle.write(json.dumps(raw, ensure_ascii=False, default=str) + "\n")
                yield raw
        except ConvertError as exc:
            raise _SourceError(str(exc)) from exc

    def close(self) -> None:
        self.handle.close()


def training_args(settings: Settings) -> dict[str, Any]:
    """The settings that shape a training, as recorded on the run and the version."""
    keys = (
        "model", "model_family", "lora_rank", "lora_alpha", "epochs", "learning_rate", "train_batch_size",
        "grad_accum", "max_steps", "max_pixels", "freeze_vit", "modules_to_save", "swift_extra_args", "seed",
        "val_fraction", "max_side", "promote_margin",
    )  # fmt: skip
    dumped = settings.model_dump(mode="json")
    return {key: dumped[key] for key in keys}


def _current_job() -> Any:
    from rq import get_current_job

    return get_current_job()
