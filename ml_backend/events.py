"""Label Studio events in, training runs out: webhook parsing, the trigger, single-flight, cancel and the janitor.

The webhook path (:meth:`Loop.handle`) touches only Redis: it records the annotation idempotently
(:mod:`ml_backend.reviews`) and enqueues one *decision* job (``ml_backend.jobs.reconcile.decide``; at most one
queued per project) when the project has enough new reviews, when its last reconciliation from the Label Studio
API is older than ``reconcile_after`` seconds (reviews that sent no webhook, e.g. imported ones, then count
within a minute of the next event), or when the Train button was pressed. Label Studio waits at most 1 s for a
webhook and never retries, so nothing slow happens there.

The decision job reconciles the count from the Label Studio API and calls :meth:`Loop.maybe_train`: at least
``min_new_reviews`` new reviews and the cool-down passed (``force`` skips both), then the project's single-flight
lock ``<prefix>:lock:train:<project>`` (SET NX with a TTL), a queued run in the registry and one RQ job
``ml_backend.jobs.train.train_run(run_id)`` with RQ's Retry policy.

A lock whose run is over, or whose worker died, must not block the project: the lock names its run, and a
trigger that finds the lock taken asks :meth:`Loop.reap` whether that run is dead — a running stage without
its heartbeat key ``<prefix>:run:<id>:alive`` (refreshed by the job every ``heartbeat_ttl / 3`` s) or a queued
run whose RQ job is gone or failed. A dead run is marked failed, its reviews go back to the count and the lock
is released. The periodic reconciliation and ``labelloop worker`` at start reap too.

Redis keys (prefix ``Settings.redis_prefix``): ``:reviews:<project>:*`` (counts), ``:lock:train:<project>``,
``:run:<id>:alive``, ``:run:<id>:cancel``, ``:decide:<project>[:force]`` (a decision is queued),
``:quiet:<project>`` (cool-down: no decision before it expires), ``:reconciled:<project>`` (reconciled
recently), ``:events`` (pub/sub of activations).

Errors: malformed payloads raise :class:`EventError` (a 400); Redis failures propagate as ``redis.RedisError``
(the webhook answers 503); registry refusals as :class:`~ml_backend.registry.RegistryError`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml_backend.exceptions import LabelloopError
from ml_backend.registry import NotFoundError, Registry, RegistryError, RunStatus, TrainingRun
from ml_backend.reviews import ReviewCounter, ReviewRule, is_reviewed

if TYPE_CHECKING:
    import redis

    from ml_backend.settings import Settings

log = logging.getLogger(__name__)

ANNOTATION_EVENTS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"})
DELETE_EVENTS = frozenset({"ANNOTATIONS_DELETED"})
TRAIN_EVENT = "START_TRAINING"
TRAIN_JOB = "ml_backend.jobs.train.train_run"
DECIDE_JOB = "ml_backend.jobs.reconcile.decide"
RUNNING = frozenset({RunStatus.EXPORTING, RunStatus.TRAINING, RunStatus.EVALUATING})
WAITING = frozenset({RunStatus.QUEUED, RunStatus.RETRYING})
PENDING_LOCK_GRACE = 60.0  # seconds a lock may name no run yet (between SET NX and the registry insert)
QUEUE_ALLOWANCE = 3600  # seconds a training job may wait in the queue, added to the lock's backstop TTL


class EventError(LabelloopError):
    """A webhook payload labelloop cannot read; the message names the field and what came."""


@dataclass(frozen=True)
class WebhookEvent:
    """The parts of a Label Studio webhook the loop uses."""

    action: str
    project: int | None = None
    label_config: str | None = None
    annotations: tuple[Mapping[str, Any], ...] = ()
    deleted_ids: tuple[int, ...] = ()


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EventError(f"webhook: {field} must be an integer id, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise EventError(f"webhook: {field} must be an integer id, got {value!r}") from exc


def parse_event(payload: Any) -> WebhookEvent:  # noqa: PLR0912 - one branch per payload shape
    """Read a Label Studio webhook body (keys ``action``, ``project``, ``annotation(s)``, ``task``).

    Example: ``{"action": "ANNOTATION_CREATED", "project": {"id": 3, "label_config": "<View>..."},
    "annotation": {"id": 9, ...}}`` -> ``WebhookEvent("ANNOTATION_CREATED", 3, "<View>...", ({"id": 9, ...},))``.
    Actions the loop does not handle parse to an event with only ``action`` (and ``project`` when readable).

    Raises:
        EventError: not a JSON object, no ``action``, or a handled action without a project or annotation id.
    """
    if not isinstance(payload, Mapping):
        raise EventError(f"webhook: expected a JSON object, got {type(payload).__name__}")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise EventError(f"webhook: 'action' must be a non-empty string, got {action!r}")
    handled = action in ANNOTATION_EVENTS or action in DELETE_EVENTS or action == TRAIN_EVENT
    raw_project = payload.get("project")
    project: int | None = None
    label_config: str | None = None
    if isinstance(raw_project, Mapping):
        if raw_project.get("id") is not None:
            project = _int(raw_project.get("id"), "project.id")
        config = raw_project.get("label_config")
        label_config = config if isinstance(config, str) else None
    elif raw_project is not None:
        project = _int(raw_project, "project")
    if not handled:
        return WebhookEvent(action, project)
    annotations: list[Mapping[str, Any]] = []
    if action in ANNOTATION_EVENTS:
        raw = payload.get("annotation")
        items = raw if isinstance(raw, list) else [raw]
        for item in items:
            if not isinstance(item, Mapping) or item.get("id") is None:
                raise EventError(f"webhook {action}: 'annotation' must be an object with an id, got {item!r}")
            _int(item["id"], "annotation.id")
            annotations.append(item)
        if project is None and annotations and annotations[0].get("project") is not None:
            project = _int(annotations[0]["project"], "annotation.project")
    deleted: list[int] = []
    if action in DELETE_EVENTS:
        raw = payload.get("annotations")
        if not isinstance(raw, list):
            raise EventError(f"webhook {action}: 'annotations' must be a list, got {raw!r}")
        deleted = [_int(item.get("id") if isinstance(item, Mapping) else item, "annotations[].id") for item in raw]
    if project is None:
        raise EventError(f"webhook {action}: 'project' must carry the project id, got {raw_project!r}")
    return WebhookEvent(action, project, label_config, tuple(annotations), tuple(deleted))


@dataclass(frozen=True)
class EventOutcome:
    """What the webhook did: ``ignored``, ``recorded`` (count changed), ``unchanged`` (already known) or ``queued``
    (a decision job was enqueued)."""

    action: str
    status: str
    project: int | None = None
    pending: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON body of the webhook response."""
        # Not dataclasses.asdict: it deep-copies every field (about 10 us, on the webhook's hot path).
        body: dict[str, Any] = {"action": self.action, "status": self.status}
        if self.project is not None:
            body["project"] = self.project
        if self.pending is not None:
            body["pending"] = self.pending
        return body


@dataclass(frozen=True)
class TriggerResult:
    """Whether :meth:`Loop.maybe_train` started a run, which one (or which one is in flight), and why."""

    started: bool
    reason: str
    run_id: str | None = None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


# The webhook's one round trip. KEYS: pending, trained, inflight, projects, reconciled, lock, quiet, decide.
# ARGV: project, min_new_reviews, check_reconciled (0/1), decide flag TTL, now, then (annotation id, op) pairs
# with op r (reviewed: joins pending unless trained or in flight), u (not a review) or d (deleted): both leave.
# Returns {changed, pending, first time this project is seen, 1 if the caller must enqueue a decision}.
_EVENT = """
local changed = 0
for i = 6, #ARGV, 2 do
  local id, op = ARGV[i], ARGV[i + 1]
  if op == 'r' then
    if redis.call('SISMEMBER', KEYS[2], id) == 0 and redis.call('SISMEMBER', KEYS[3], id) == 0 then
      changed = changed + redis.call('SADD', KEYS[1], id)
    end
  else
    changed = changed + redis.call('SREM', KEYS[1], id)
  end
end
local first = redis.call('SADD', KEYS[4], ARGV[1])
local pending = redis.call('SCARD', KEYS[1])
local due = pending >= tonumber(ARGV[2]) or (ARGV[3] == '1' and redis.call('EXISTS', KEYS[5]) == 0)
local queue = 0
if due and redis.call('EXISTS', KEYS[6]) == 0 and redis.call('EXISTS', KEYS[7]) == 0 then
  if redis.call('SET', KEYS[8], ARGV[5], 'NX', 'EX', tonumber(ARGV[4])) then
    queue = 1
  end
end
return {changed, pending, first, queue}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Loop:
    """The retraining loop's state machine over Redis, the registry and the RQ queue.

    Construct one per process edge (web app, worker, CLI) with a Redis client whose responses are bytes (RQ's
    requirement); the methods are thread-safe.
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        registry: Registry | None = None,
        *,
        event_client: Callable[[], redis.Redis] | None = None,
    ) -> None:
        """``event_client``: the Redis client :meth:`handle` records an event on, the calling thread's (see
        :meth:`from_settings`); default ``client``."""
        self.settings = settings
        self.redis = client
        self._event_client = event_client
        self._registry = registry
        self.prefix = settings.redis_prefix
        self.counter = ReviewCounter(client, self.prefix)
        self._release = client.register_script(_RELEASE)
        self._event = client.register_script(_EVENT)
        self._rules: dict[str, ReviewRule] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, timeout: float | None = 2.0, fail_fast: bool = False, per_thread: bool = False
    ) -> Loop:
        """A Loop on its own Redis client with ``timeout``-second socket timeouts.

        ``fail_fast`` turns off redis-py's retries with backoff, so a down Redis fails the call at once (the
        webhook answers 503 in milliseconds instead of after several seconds of retrying). ``per_thread`` (the
        webhook's): :meth:`handle` records events on a connection of the calling thread's own, not through the
        pool, whose lock and per-command health check (a non-blocking ``recv`` between ``ioctl`` calls) cost
        system calls and thread switches on every event in a threaded server.
        """
        import redis as redis_lib
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if fail_fast:
            options["retry"] = Retry(NoBackoff(), 0)
        event_client: Callable[[], redis.Redis] | None = None
        if per_thread:
            local = threading.local()
            # Unlike the pool, a connection of its own is not checked before each use: one that Redis closed
            # meanwhile (a restart) fails its next command, which is then sent once more on a new connection.
            # Only a connection error is retried (as a rule the command did not run), never a timeout (it may have).
            thread_options = {**options, "retry": Retry(NoBackoff(), 1, supported_errors=(redis_lib.ConnectionError,))}

            def thread_client() -> redis.Redis:
                found: redis.Redis | None = getattr(local, "client", None)
                if found is None:
                    found = local.client = redis_lib.Redis.from_url(
                        settings.redis_url, single_connection_client=True, **thread_options
                    )
                return found

            event_client = thread_client

        return cls(settings, redis_lib.Redis.from_url(settings.redis_url, **options), event_client=event_client)

    @property
    def registry(self) -> Registry:
        """The registry under ``data_dir``, opened on first use (the webhook needs it only for a new project)."""
        if self._registry is None:
            self._registry = Registry(self.settings.data_dir)
        return self._registry

    # --- keys -------------------------------------------------------------------------------------------------

    def lock_key(self, project: int) -> str:
        return f"{self.prefix}:lock:train:{project}"

    def alive_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:alive"

    def cancel_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:cancel"

    def decide_key(self, project: int, *, force: bool = False) -> str:
        return f"{self.prefix}:decide:{project}" + (":force" if force else "")

    def quiet_key(self, project: int) -> str:
        return f"{self.prefix}:quiet:{project}"

    def reconciled_key(self, project: int) -> str:
        """Exists for ``reconcile_after`` seconds after the project was reconciled from the Label Studio API."""
        return f"{self.prefix}:reconciled:{project}"

    def mark_reconciled(self, project: int) -> None:
        """Events need not ask for a reconciliation of ``project`` for the next ``reconcile_after`` seconds."""
        if self.settings.reconcile_after > 0:
            self.redis.set(self.reconciled_key(project), str(time.time()), ex=self.settings.reconcile_after)

    @property
    def events_channel(self) -> str:
        return f"{self.prefix}:events"

    def queue(self) -> Any:
        """The RQ queue the worker listens on."""
        from rq import Queue

        return Queue(self.settings.queue_name, connection=self.redis)

    @property
    def job_timeout(self) -> int:
        """RQ's limit for one training job: training plus evaluation plus an hour for export and bookkeeping."""
        return self.settings.train_timeout + self.settings.eval_timeout + 3600

    def retry_delays(self) -> list[int]:
        """Seconds before each RQ retry of a training whose export failed: retry_delay, doubled each time."""
        return [self.settings.retry_delay * 2**i for i in range(self.settings.train_retries)]

    # --- the webhook path -----------------------------------------------------------------------------------

    def _rule(self, label_config: str | None) -> ReviewRule:
        key = label_config or ""
        rule = self._rules.get(key)
        if rule is None:
            rule = ReviewRule.from_label_config(label_config, self.settings)
            if len(self._rules) > 256:
                self._rules.clear()
            self._rules[key] = rule
        return rule

    def handle(self, event: WebhookEvent) -> EventOutcome:
        """Record one webhook event and enqueue a decision when it may start a training. Idempotent.

        Raises:
            redis.RedisError: Redis is unreachable; nothing was recorded.
        """
        project = event.project
        if project is None or (
            event.action not in ANNOTATION_EVENTS and event.action not in DELETE_EVENTS and event.action != TRAIN_EVENT
        ):
            return EventOutcome(event.action, "ignored", project)
        if event.action == TRAIN_EVENT:
            if self.counter.add_project(project):
                self._remember(project)
            self.request_decision(project, force=True)
            return EventOutcome(event.action, "queued", project, self.counter.pending(project))
        if event.action in DELETE_EVENTS:
            ops = [item for aid in event.deleted_ids for item in (aid, "d")]
        else:
            rule = self._rule(event.label_config)
            ops = [item for a in event.annotations for item in (int(a["id"]), "r" if is_reviewed(a, rule) else "u")]
        # One round trip: record, count, and claim the right to queue a decision (see _EVENT).
        keys = [
            self.counter.key(project, "pending"), self.counter.key(project, "trained"),
            self.counter.key(project, "inflight"), self.counter.projects_key, self.reconciled_key(project),
            self.lock_key(project), self.quiet_key(project), self.decide_key(project),
        ]  # fmt: skip
        args = [project, self.settings.min_new_reviews, int(self.settings.reconcile_after > 0), 600, time.time()]
        client = self._event_client() if self._event_client is not None else None
        changed, pending, first, queue = self._event(keys=keys, args=[*args, *ops], client=client)
        if first:
            self._remember(project)
        if queue:
            self._enqueue_decision(project, force=False)
            return EventOutcome(event.action, "queued", project, int(pending))
        return EventOutcome(event.action, "recorded" if changed else "unchanged", project, int(pending))

    def _remember(self, project: int) -> None:
        """Record a project seen for the first time durably in the registry (the reconciliation walks them even
        after Redis lost everything); on failure forget it in Redis too, so the next event tries again."""
        try:
            self.registry.remember_project(project)
        except Exception:  # the event is recorded anyway
            self.redis.srem(self.counter.projects_key, project)
            log.warning("events: project %s not remembered in the registry", project, exc_info=True)

    def request_decision(self, project: int, *, force: bool = False) -> bool:
        """Enqueue ``decide(project, force)`` unless one is already queued (or, unforced, the project is quiet).

        Returns True when a job was enqueued.
        """
        if not force and self.redis.exists(self.quiet_key(project)):
            return False
        key = self.decide_key(project, force=force)
        if not self.redis.set(key, str(time.time()), nx=True, ex=600):
            return False
        self._enqueue_decision(project, force=force)
        return True

    def _enqueue_decision(self, project: int, *, force: bool) -> None:
        """Enqueue ``decide(project, force)`` (its flag is already set; it is removed again if this fails)."""
        key = self.decide_key(project, force=force)
        try:
            self.queue().enqueue(
                DECIDE_JOB,
                project,
                force,
                job_timeout=600,
                result_ttl=3600,
                failure_ttl=7 * 86400,
                description=f"labelloop: decide whether project {project} trains" + (" (forced)" if force else ""),
            )
        except Exception:
            self.redis.delete(key)
            raise
        log.info("events: project %s: decision queued%s", project, " (forced)" if force else "")

    # --- the trigger (worker side) --------------------------------------------------------------------------

    def maybe_train(self, project: int, *, force: bool = False, trigger: str | None = None) -> TriggerResult:
        """Start a training of ``project`` if it is due, exactly once however many callers race.

        Due means ``min_new_reviews`` pending and the cool-down over, or ``force``. Starting means: take the
        single-flight lock, record a queued run, enqueue ``train_run(run_id)``.

        Raises:
            redis.RedisError: Redis is unreachable (nothing was started).
        """
        trigger = trigger or ("manual" if force else "threshold")
        pending = self.counter.pending(project)
        if not force:
            if pending < self.settings.min_new_reviews:
                return TriggerResult(False, f"{pending} of {self.settings.min_new_reviews} new reviews")
            last = self.registry.last_run_started(project)
            wait = 0.0 if last is None else last + self.settings.cooldown_seconds - time.time()
            if wait > 0:
                self.redis.set(self.quiet_key(project), "1", ex=max(1, int(wait)))
                return TriggerResult(False, f"cool-down: the next training can start in {wait:.0f} s")
        token = f"pending:{uuid.uuid4().hex}:{time.time()}"
        lock_ttl = self.job_timeout * (1 + self.settings.train_retries) + sum(self.retry_delays()) + QUEUE_ALLOWANCE
        if not self.redis.set(self.lock_key(project), token, nx=True, ex=lock_ttl):
            holder = _text(self.redis.get(self.lock_key(project)))
            if holder is None or self._release_if_stale(project, holder):
                if not self.redis.set(self.lock_key(project), token, nx=True, ex=lock_ttl):
                    holder = _text(self.redis.get(self.lock_key(project)))
                    return TriggerResult(False, f"run {holder} is in flight", holder)
            else:
                return TriggerResult(False, f"run {holder} is in flight", holder)
        run: TrainingRun | None = None
        try:
            run = self.registry.create_run(
                project, trigger=trigger, base_model=self.settings.model_label, reviews=pending
            )
            self.redis.set(self.lock_key(project), run.id, xx=True, keepttl=True)
            from rq import Retry

            delays = self.retry_delays()
            retry = Retry(max=self.settings.train_retries, interval=delays) if delays else None
            job = self.queue().enqueue(
                TRAIN_JOB,
                run.id,
                job_id=f"{self.prefix}-train-{run.id}",
                job_timeout=self.job_timeout,
                retry=retry,
                result_ttl=30 * 86400,
                failure_ttl=30 * 86400,
                meta={"run": run.id, "project": project, "stage": "queued"},
                description=f"labelloop: train project {project} (run {run.id})",
            )
            self.registry.update_run(run.id, job_id=job.id)
        except Exception as exc:
            self._release(keys=[self.lock_key(project)], args=[run.id if run else token])
            if run is not None:
                self.registry.update_run(run.id, status=RunStatus.FAILED, error=f"could not enqueue: {exc}")
            raise
        log.info("events: project %s: run %s queued (%s, %s new reviews)", project, run.id, trigger, pending)
        return TriggerResult(True, "queued", run.id)

    def release_lock(self, project: int, run_id: str) -> bool:
        """Release the project's lock if ``run_id`` holds it."""
        return bool(self._release(keys=[self.lock_key(project)], args=[run_id]))

    def _release_if_stale(self, project: int, holder: str) -> bool:
        if holder.startswith("pending:"):
            stale = time.time() - float(holder.rsplit(":", 1)[1]) > PENDING_LOCK_GRACE
        else:
            try:
                run = self.registry.get_run(holder)
            except NotFoundError:
                stale = True
            else:
                stale = run.status.is_terminal or self.reap(run)
        if stale:
            self._release(keys=[self.lock_key(project)], args=[holder])
            log.info("events: project %s: released the stale lock of %s", project, holder)
        return stale

    # --- dead runs, cancel ----------------------------------------------------------------------------------

    def is_alive(self, run_id: str) -> bool:
        """The run's job refreshed its heartbeat within ``heartbeat_ttl`` seconds."""
        return bool(self.redis.exists(self.alive_key(run_id)))

    def heartbeat(self, run_id: str, project: int) -> None:
        """Called by the training job every ``heartbeat_ttl / 3`` s: I am alive (and still hold the lock)."""
        self.redis.set(self.alive_key(run_id), str(time.time()), ex=self.settings.heartbeat_ttl)

    def reap(self, run: TrainingRun) -> bool:
        """Mark ``run`` failed if its worker is gone; True when it was dead. Reviews it took return to the count.

        Dead: a running stage (exporting, training, evaluating) without its heartbeat, or a waiting one
        (queued, retrying) whose RQ job no longer exists or ended failed/stopped/cancelled.
        """
        if run.status.is_terminal:
            return False
        reason: str | None = None
        if run.status in RUNNING and not self.is_alive(run.id):
            reason = (
                f"worker lost during {run.status.value}: no heartbeat for {self.settings.heartbeat_ttl} s "
                "(killed or crashed); no adapter was promoted"
            )
        elif run.status in WAITING:
            reason = self._waiting_run_problem(run)
        if reason is None:
            return False
        try:
            self.registry.update_run(run.id, expect={run.status}, status=RunStatus.FAILED, error=reason)
        except RegistryError:
            return False  # it moved on meanwhile: alive after all
        self.counter.restore(run.project)
        self.release_lock(run.project, run.id)
        log.warning("events: run %s of project %s marked failed: %s", run.id, run.project, reason)
        return True

    def _waiting_run_problem(self, run: TrainingRun) -> str | None:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job, JobStatus

        if not run.job_id:
            return "never enqueued" if time.time() - run.created_at > PENDING_LOCK_GRACE else None
        try:
            status = Job.fetch(run.job_id, connection=self.redis).get_status()
        except NoSuchJobError:
            return f"its RQ job {run.job_id} is gone (Redis restarted or the job expired)"
        if status in {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}:
            return f"its RQ job {run.job_id} ended {status.value} before the run started"
        return None

    def reap_stale_runs(self) -> list[str]:
        """Reap every unfinished run whose worker is gone; returns their ids."""
        active = self.registry.list_runs(statuses=RUNNING | WAITING, limit=1000)
        return [run.id for run in active if self.reap(run)]

    def cancel(self, run_id: str) -> str:
        """Cancel a run: a waiting one at once (``cancelled``), a running one through its cancel flag, which the job
        polls every second (``cancelling``); a run whose worker is gone is reaped (``failed``).

        Raises:
            NotFoundError: no such run.
            RegistryError: the run already finished.
        """
        run = self.registry.get_run(run_id)
        if run.status.is_terminal:
            raise RegistryError(f"run {run_id}: already {run.status.value}; nothing to cancel")
        self.redis.set(self.cancel_key(run_id), "1", ex=7 * 86400)
        if run.status in WAITING:
            try:
                self.registry.update_run(
                    run_id, expect=WAITING, status=RunStatus.CANCELLED, error="cancelled before it started"
                )
            except RegistryError:
                return "cancelling"  # the job picked it up meanwhile; it will see the flag
            if run.job_id:
                self._cancel_job(run.job_id)
            self.counter.restore(run.project)
            self.release_lock(run.project, run_id)
            return "cancelled"
        if self.reap(run):
            return "failed"
        return "cancelling"

    def is_cancelled(self, run_id: str) -> bool:
        """The run's cancel flag is set."""
        return bool(self.redis.exists(self.cancel_key(run_id)))

    def _cancel_job(self, job_id: str) -> None:
        from rq.exceptions import InvalidJobOperation, NoSuchJobError
        from rq.job import Job

        try:
            Job.fetch(job_id, connection=self.redis).cancel()
        except (NoSuchJobError, InvalidJobOperation) as exc:
            log.info("events: RQ job %s not cancelled: %s", job_id, exc)

    # --- activations ------------------------------------------------------------------------------------------

    def publish_activation(self, project: int, version_id: str | None) -> int:
        """Tell every backend that ``project`` now serves ``version_id`` (None: the base model).

        Returns how many subscribers got it; a backend that missed it catches up on its next registry poll.
        """
        message = json.dumps({"type": "activated", "project": project, "version": version_id, "at": time.time()})
        return int(self.redis.publish(self.events_channel, message))
