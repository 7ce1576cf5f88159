"""What counts as a reviewed annotation, and how many a project has accrued since its last training.

A *review* is a submitted, non-cancelled annotation — and, when the project's label config has a Choices control
named ``Settings.review_control`` (``review`` by default), one whose verdict in that control is
``Settings.review_accept`` (``accept``). Drafts never reach the API as annotations, so "submitted" means "exists".

Counting lives in Redis under ``<prefix>:reviews:<project>:*``, as sets of annotation ids, so every operation is
idempotent (a redelivered webhook adds an id that is already there):

- ``pending``  reviewed annotations not yet used by a training: the count the trigger compares with
  ``min_new_reviews``;
- ``inflight`` the pending ids a running training took when it started (at most one run per project);
- ``trained``  ids used by finished trainings (promoted or rejected: the data was looked at).

A run takes ``pending`` into ``inflight`` when it exports; success moves ``inflight`` into ``trained``, failure
puts it back into ``pending``, so reviews that arrive during training count toward the next run and a failed run
loses nothing. Counting distinct annotation ids means an edit of an already-trained annotation is not "new"
(the next export still includes the edit).

Webhooks can be lost, so :meth:`ReviewCounter.reconcile` recomputes ``pending`` from the full list of the
project's annotations in Label Studio (:func:`fetch_annotations`): pending = reviewed - trained - inflight.

Redis errors propagate as ``redis.RedisError``; the webhook answers them with 503.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml_backend.exceptions import ConfigError, LabelloopError

if TYPE_CHECKING:
    import redis

    from ml_backend.settings import Settings

log = logging.getLogger(__name__)


class LabelStudioUnavailableError(LabelloopError):
    """Label Studio could not be asked (down, timeout, refused credentials); the message says which."""


@dataclass(frozen=True)
class ReviewRule:
    """How to tell a reviewed annotation: ``control`` is None when the config has no review control."""

    control: str | None
    accept: str

    @classmethod
    def from_label_config(cls, label_config: str | None, settings: Settings) -> ReviewRule:
        """The rule for a project: gate on ``settings.review_control`` only if the config has such a Choices.

        An unparsable or missing config yields the ungated rule (every submitted annotation counts); the
        exporter rejects such a config with its own message when training starts.
        """
        control = settings.review_control
        return cls(control if has_choices_control(label_config, control) else None, settings.review_accept)


def has_choices_control(label_config: str | None, name: str) -> bool:
    """True when ``label_config`` has a ``<Choices name="{name}">`` tag. Never raises."""
    if not label_config:
        return False
    try:
        root = ET.fromstring(label_config)  # noqa: S314 - LS validated the config; expat refuses entity bombs
    except ET.ParseError:
        return False
    return any(el.tag.lower() == "choices" and el.get("name") == name for el in root.iter())


def is_reviewed(annotation: Mapping[str, Any], rule: ReviewRule) -> bool:
    """True when ``annotation`` (an LS annotation dict, from a webhook or the API) is a review under ``rule``.

    Example: with ``ReviewRule("review", "accept")``, ``{"was_cancelled": False, "result": [{"from_name":
    "review", "type": "choices", "value": {"choices": ["accept"]}}]}`` is reviewed; with ``["reject"]`` or no
    review region it is not; with ``ReviewRule(None, "accept")`` any non-cancelled annotation is. The verdict is
    the first choice of the first review region that has one, exactly as the exporter's
    ``converters.annotations.review_verdict`` reads it, so the count and the export agree.
    """
    if annotation.get("was_cancelled"):
        return False
    if rule.control is None:
        return True
    for region in annotation.get("result") or ():
        if isinstance(region, Mapping) and region.get("from_name") == rule.control:
            value = region.get("value")
            choices = value.get("choices") if isinstance(value, Mapping) else None
            if isinstance(choices, list) and choices:
                return bool(choices[0] == rule.accept)  # the verdict, as converters.annotations reads it
    return False


@dataclass(frozen=True)
class ReconcileResult:
    """Pending count of a project before and after a reconciliation, and the reviewed total in Label Studio."""

    project: int
    before: int
    after: int
    reviewed: int


# KEYS: pending, trained, inflight; ARGV: annotation id
_RECORD = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 or redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  return 0
end
return redis.call('SADD', KEYS[1], ARGV[1])
"""
# KEYS: pending, inflight
_TAKE = """
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
end
return redis.call('SCARD', KEYS[2])
"""
# KEYS: target, inflight
_SETTLE = """
local n = redis.call('SCARD', KEYS[2])
if n > 0 then
  redis.call('SUNIONSTORE', KEYS[1], KEYS[1], KEYS[2])
end
redis.call('DEL', KEYS[2])
return n
"""
# KEYS: pending, trained, inflight, scratch, projects; ARGV: project id, reviewed ids...
_RECONCILE = """
local before = redis.call('SCARD', KEYS[1])
redis.call('DEL', KEYS[4])
for i = 2, #ARGV, 5000 do
  redis.call('SADD', KEYS[4], unpack(ARGV, i, math.min(i + 4999, #ARGV)))
end
redis.call('SDIFFSTORE', KEYS[1], KEYS[4], KEYS[2], KEYS[3])
redis.call('DEL', KEYS[4])
redis.call('SADD', KEYS[5], ARGV[1])
return {before, redis.call('SCARD', KEYS[1])}
"""


class ReviewCounter:
    """Per-project review counts in Redis (see the module docstring for the keys and their life cycle)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._record = client.register_script(_RECORD)
        self._take = client.register_script(_TAKE)
        self._settle = client.register_script(_SETTLE)
        self._reconcile = client.register_script(_RECONCILE)

    def key(self, project: int, part: str) -> str:
        """``<prefix>:reviews:<project>:<part>``."""
        return f"{self.prefix}:reviews:{project}:{part}"

    @property
    def projects_key(self) -> str:
        """The set of projects labelloop has heard of (the periodic reconciliation walks it)."""
        return f"{self.prefix}:reviews:projects"

    def projects(self) -> set[int]:
        """Projects that have sent events or been reconciled."""
        return {int(p) for p in self.redis.smembers(self.projects_key)}

    def add_project(self, project: int) -> bool:
        """Remember ``project`` for the periodic reconciliation; True the first time (since Redis last lost it)."""
        return bool(self.redis.sadd(self.projects_key, project))

    def record(self, project: int, annotation_id: int, *, reviewed: bool) -> bool:
        """Apply one annotation event; True when the pending count changed.

        A reviewed annotation not yet trained on joins ``pending`` (again: no change); one that stopped being a
        review (rejected on update, cancelled) leaves it.
        """
        if reviewed:
            keys = [self.key(project, "pending"), self.key(project, "trained"), self.key(project, "inflight")]
            return bool(self._record(keys=keys, args=[annotation_id]))
        return bool(self.redis.srem(self.key(project, "pending"), annotation_id))

    def forget(self, project: int, annotation_ids: Iterable[int]) -> int:
        """Drop deleted annotations from ``pending``; returns how many were there."""
        ids = list(annotation_ids)
        return int(self.redis.srem(self.key(project, "pending"), *ids)) if ids else 0

    def pending(self, project: int) -> int:
        """Reviewed annotations not yet used by a training."""
        return int(self.redis.scard(self.key(project, "pending")))

    def inflight(self, project: int) -> int:
        """Reviews the running training took."""
        return int(self.redis.scard(self.key(project, "inflight")))

    def take(self, project: int) -> int:
        """A training starts: move ``pending`` to ``inflight`` (replacing a stale one); returns how many."""
        return int(self._take(keys=[self.key(project, "pending"), self.key(project, "inflight")]))

    def commit(self, project: int) -> int:
        """The training finished (promoted or rejected): ``inflight`` joins ``trained``."""
        return int(self._settle(keys=[self.key(project, "trained"), self.key(project, "inflight")]))

    def restore(self, project: int) -> int:
        """The training failed or was cancelled: ``inflight`` goes back to ``pending``."""
        return int(self._settle(keys=[self.key(project, "pending"), self.key(project, "inflight")]))

    def reconcile(self, project: int, reviewed_ids: Iterable[int]) -> ReconcileResult:
        """Set ``pending`` to ``reviewed_ids`` minus trained and in-flight ids, atomically; returns the change."""
        ids = [int(i) for i in reviewed_ids]
        keys = [
            self.key(project, "pending"), self.key(project, "trained"), self.key(project, "inflight"),
            self.key(project, "scratch"), self.projects_key,
        ]  # fmt: skip
        before, after = self._reconcile(keys=keys, args=[project, *ids])
        self.redis.hset(self.key(project, "meta"), mapping={"reconciled_at": time.time(), "reviewed": len(ids)})
        if before != after:
            log.info("reviews: project %s pending %s -> %s after reconciling with Label Studio", project, before, after)
        return ReconcileResult(project, int(before), int(after), len(ids))


def ls_client(settings: Settings) -> Any:
    """A Label Studio SDK client from ``ls_url``/``ls_api_key`` (legacy token or PAT; the SDK picks the scheme).

    Raises:
        ConfigError: ``ls_url`` or ``ls_api_key`` is not set.
    """
    if not settings.ls_url or settings.ls_api_key is None:
        raise ConfigError(
            "Label Studio API: LABELLOOP_LS_URL and LABELLOOP_LS_API_KEY must be set to reconcile and export"
        )
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=settings.ls_url, api_key=settings.ls_api_key.get_secret_value(), timeout=30.0)


def fetch_project(settings: Settings, project: int) -> tuple[str, Iterator[dict[str, Any]]]:
    """The project's label config and an iterator over all its annotations (as LS annotation dicts).

    Raises:
        ConfigError: ``ls_url`` or ``ls_api_key`` is not set.
        LabelStudioUnavailableError: Label Studio is down, times out or refuses the credentials (raised by the
            call for the config at once, or by the iterator while paging).
    """
    client = ls_client(settings)
    try:
        label_config = str(client.projects.get(id=project).label_config or "")
    except Exception as exc:
        raise LabelStudioUnavailableError(_describe(settings, f"project {project}", exc)) from exc

    def annotations() -> Iterator[dict[str, Any]]:
        try:
            pager = client.tasks.list(project=project, fields="all", only_annotated=True, page_size=500)
            for task in pager:
                for annotation in getattr(task, "annotations", None) or ():
                    if isinstance(annotation, dict):
                        yield annotation
        except Exception as exc:
            raise LabelStudioUnavailableError(_describe(settings, f"tasks of project {project}", exc)) from exc

    return label_config, annotations()


def _describe(settings: Settings, what: str, exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    cause = f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"
    return f"Label Studio at {settings.ls_url}: cannot read {what} ({cause})"


def reconcile_project(settings: Settings, counter: ReviewCounter, project: int) -> ReconcileResult:
    """Recount ``project``'s reviews from the Label Studio API.

    Raises:
        ConfigError: ``ls_url`` or ``ls_api_key`` is not set.
        LabelStudioUnavailableError: Label Studio cannot be read; the Redis counts are left as they were.
    """
    label_config, annotations = fetch_project(settings, project)
    rule = ReviewRule.from_label_config(label_config, settings)
    reviewed = [int(a["id"]) for a in annotations if "id" in a and is_reviewed(a, rule)]
    return counter.reconcile(project, reviewed)
