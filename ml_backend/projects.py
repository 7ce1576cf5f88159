"""A Label Studio project wired to labelloop, created or brought up to date idempotently (`labelloop setup`).

:func:`connect` opens the Label Studio (LS) API with ``Settings.ls_url``/``ls_api_key`` and checks both, so a
wrong URL or a refused token fails first with a one-line explanation. :func:`ensure_project` then compares each
part of the wiring with what LS has and changes only what differs, in this order:

1. **project** found by its exact title (created when missing) and its label config.
2. **ML backend** at ``Settings.backend_url`` (basic auth when configured); LS checks it can reach it (a backend
   LS cannot reach fails here, before anything else is changed).
3. **webhook** ``<backend>/webhook`` for the annotation events, with the shared-secret header. Connecting a
   backend makes LS add a header-less, all-events webhook at that URL: it is updated in place; one left at the
   backend's previous URL is deleted.
4. **predictions shown**: ``show_collab_predictions`` on and the project's ``model_version`` equal to the ML
   backend's title: only then does LS ask the live backend when an annotator opens a task.
5. **tasks**: ``images`` under LS's local-files root become a local-files storage (synced; LS skips files it
   already has); other image directories are uploaded, 100 files per request, skipping file names the project
   already has; an ``import_file`` (LS JSON tasks) is imported, skipping tasks whose data the project has.

Running it again with the same inputs changes nothing and reports every part ``unchanged``.

Failures raise :class:`SetupError` (a :class:`~ml_backend.exceptions.LabelloopError`) with one line that says
what failed and what to change: LS unreachable, a refused API key (legacy tokens disabled for the organization
vs a bad token), LS's SSRF guard refusing a backend or webhook on a private address (which LS setting to turn
off), a backend LS cannot reach, a local-files path LS refuses. The API key never appears in messages or logs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from ml_backend.events import ANNOTATION_EVENTS, DELETE_EVENTS
from ml_backend.exceptions import LabelloopError

logger = logging.getLogger(__name__)

# Must equal the header the /webhook endpoint checks (ml_backend/api/webhook.py).
WEBHOOK_SECRET_HEADER = "X-Labelloop-Secret"  # noqa: S105 - a header name, not a secret
# The events the retraining loop counts reviews from (ml_backend/events.py).
WEBHOOK_ACTIONS: tuple[str, ...] = tuple(sorted(ANNOTATION_EVENTS | DELETE_EVENTS))
BACKEND_TITLE = "labelloop"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
IMAGE_REGEX = r"(?i).*\.(png|jpe?g|webp|gif|bmp|tiff?)$"
MAX_FILES_PER_UPLOAD = 100  # LS's DATA_UPLOAD_MAX_NUMBER_FILES
MAX_BYTES_PER_UPLOAD = 200 * 1024 * 1024  # below LS's DATA_UPLOAD_MAX_MEMORY_SIZE (250 MiB)
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # LS prefixes each uploaded file name with 8 hex characters
_LEGACY_DISABLED = "legacy token authentication has been disabled"
_SSRF_BLOCKED = "reserved network address"
_NOISE = frozenset({"id", "status_code", "version", "exc_info"})  # fields of every LS error body
_TAG = re.compile(r"<[^>]+>")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"')\]]+)")


class SetupError(LabelloopError):
    """The project could not be set up; the one-line message says what failed and what to change."""


class Change(StrEnum):
    """What :func:`ensure_project` did to one part of the wiring."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Step:
    """One part of the wiring: what it is, what was done, and a short detail for the user."""

    what: str
    change: Change
    detail: str = ""

    def line(self) -> str:
        """``"<what>: <change> (<detail>)"`` as printed by ``labelloop setup``."""
        return f"{self.what}: {self.change.value}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class SetupReport:
    """What :func:`ensure_project` found and did."""

    project_id: int
    project_url: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything in Label Studio was created or changed."""
        return any(step.change is not Change.UNCHANGED for step in self.steps)

    def lines(self) -> list[str]:
        """The report as printed: one line per step, the notes, then the project URL."""
        out = [step.line() for step in self.steps]
        out += [f"note: {note}" for note in self.notes]
        out.append("nothing changed" if not self.changed else "done")
        out.append(f"project: {self.project_url}")
        return out


@dataclass(frozen=True)
class ProjectSpec:
    """The wiring :func:`ensure_project` makes true.

    Attributes:
        title: the project's exact title (how it is found again).
        label_config: the label config XML.
        image_key: the task-data key of the config's Image (uploads and imports must provide it).
        backend_url: where LS reaches the labelloop backend; the webhook is ``<backend_url>/webhook``.
        webhook_secret: sent by LS in :data:`WEBHOOK_SECRET_HEADER` (no header when None).
        basic_auth: (user, password) LS sends to the backend, when the backend requires it.
        images: a directory of images to add (local-files storage when under ``local_files_root``, else upload).
        import_file: LS JSON tasks (a list, one task, or JSON lines) to import.
        local_files_root: LS's LOCAL_FILES_DOCUMENT_ROOT, when it is the same path here (``Settings``).
        backend_title: the ML backend's title in LS (the project's ``model_version`` names it).
        task_keys: task-data keys the config reads besides the image (e.g. ``question``).
    """

    title: str
    label_config: str
    image_key: str
    backend_url: str
    webhook_secret: str | None = None
    basic_auth: tuple[str, str] | None = None
    images: Path | None = None
    import_file: Path | None = None
    local_files_root: Path | None = None
    backend_title: str = BACKEND_TITLE
    task_keys: tuple[str, ...] = ()

    @property
    def webhook_url(self) -> str:
        """The URL LS posts events to (the same string LS itself derives from the ML backend URL)."""
        return self.backend_url.rstrip("/") + "/webhook"

    @property
    def webhook_headers(self) -> dict[str, str]:
        """The custom headers of the webhook."""
        return {WEBHOOK_SECRET_HEADER: self.webhook_secret} if self.webhook_secret else {}


# --- errors ------------------------------------------------------------------------------------------------------


def _detail(body: Any) -> str:
    """LS's error body flattened to one line: validation errors first, else ``detail``; HTML tags removed."""
    if isinstance(body, Mapping):
        if body.get("validation_errors"):
            return _detail(body["validation_errors"])
        for key in ("detail", "message", "error"):
            if body.get(key):
                return _detail(body[key])
        return "; ".join(f"{key}: {_detail(value)}" for key, value in body.items() if key not in _NOISE)
    if isinstance(body, list | tuple):
        return "; ".join(_detail(item) for item in body)
    return " ".join(_TAG.sub("", str(body)).split())[:400]


def _connection_reason(detail: str) -> str:
    """The OS-level reason in an LS "Can't connect to ML backend ..." message, e.g. ``Connection refused``."""
    match = _ERRNO.search(detail)
    if match:
        return match[1].strip()
    text = _detail(detail)
    return text.split(". ")[0] if text else "no answer"


def _api_error(exc: Exception) -> tuple[int | None, str] | None:
    """(status, detail) of a label-studio-sdk ApiError, else None."""
    from label_studio_sdk.core.api_error import ApiError

    if isinstance(exc, ApiError):
        return exc.status_code, _detail(exc.body)
    return None


def explain_auth_error(ls_url: str, detail: str) -> SetupError:
    """The error for a 401 from LS: legacy tokens disabled for the organization, or a bad/expired key."""
    if _LEGACY_DISABLED in detail:
        return SetupError(
            f"Label Studio at {ls_url} refused LABELLOOP_LS_API_KEY: legacy tokens are disabled for this "
            "organization; use a personal access token (Account & Settings > Personal Access Token) or enable "
            "legacy tokens (Organization > API Tokens Settings)"
        )
    return SetupError(
        f"Label Studio at {ls_url} refused LABELLOOP_LS_API_KEY ({detail}): copy a personal access token or a "
        "legacy token from Account & Settings in Label Studio"
    )


def _unreachable(ls_url: str, exc: Exception) -> SetupError:
    reason = str(exc) or type(exc).__name__
    return SetupError(
        f"cannot reach Label Studio at {ls_url}: {reason}; check LABELLOOP_LS_URL and that Label Studio is running"
    )


# --- templates -----------------------------------------------------------------------------------------------------


def template_dirs() -> list[Path]:
    """Where ``--template NAME`` is looked up: ``./label_configs``, then the source checkout's ``label_configs``."""
    dirs = [Path.cwd() / "label_configs", Path(__file__).resolve().parent.parent / "label_configs"]
    unique: list[Path] = []
    for path in dirs:
        if path.resolve() not in [d.resolve() for d in unique]:
            unique.append(path)
    return unique


def find_template(name: str, dirs: Sequence[Path] | None = None) -> Path:
    """The label config file of template ``name`` (``label_configs/<name>.xml``), or ``name`` as a path to a file.

    Raises:
        SetupError: no such template; the message lists the templates there are.
    """
    if name.endswith(".xml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise SetupError(f"--template {name}: no such file")
        return path
    dirs = template_dirs() if dirs is None else list(dirs)
    for directory in dirs:
        path = directory / f"{name}.xml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.xml")})
    if not known:
        where = " or ".join(str(d) for d in dirs)
        raise SetupError(f"unknown template {name!r}: no templates in {where}; give the path of an .xml file")
    raise SetupError(f"unknown template {name!r}: choose one of {', '.join(known)}, or give the path of an .xml file")


# --- connecting -------------------------------------------------------------------------------------------------


def connect(ls_url: str | None, api_key: str | None, *, timeout: float = 30.0) -> Any:
    """An SDK client (``label_studio_sdk.LabelStudio``) on a reachable LS that accepts the key.

    Checks ``GET /api/version/`` (no auth: is this LS?) and ``GET /api/current-user/whoami/`` (the key).

    Raises:
        SetupError: no URL or key; LS unreachable or not LS; the key refused (the message tells legacy tokens
            disabled for the organization from a bad or expired key).
    """
    from label_studio_sdk import LabelStudio

    if not ls_url:
        raise SetupError("no Label Studio URL: set LABELLOOP_LS_URL (e.g. http://127.0.0.1:8080)")
    if not api_key:
        raise SetupError(
            "no Label Studio API key: set LABELLOOP_LS_API_KEY (Label Studio > Account & Settings > "
            "Personal Access Token, or the legacy token)"
        )
    try:
        version = httpx.get(f"{ls_url}/api/version/", timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise _unreachable(ls_url, exc) from exc
    if version.status_code != 200 or "release" not in _json_or_text(version):
        shown = "without a Label Studio version" if version.status_code == 200 else ""
        raise SetupError(
            f"{ls_url} does not look like Label Studio (GET /api/version/ answered HTTP {version.status_code}"
            f"{' ' + shown if shown else ''}); check LABELLOOP_LS_URL"
        )
    try:
        client = LabelStudio(base_url=ls_url, api_key=api_key, timeout=timeout)
        client.users.whoami()
    except httpx.HTTPError as exc:
        raise _unreachable(ls_url, exc) from exc
    except Exception as exc:
        error = _api_error(exc)
        if error is None:
            raise
        status, detail = error
        if status == 401:
            raise explain_auth_error(ls_url, detail) from exc
        raise SetupError(f"Label Studio at {ls_url} answered HTTP {status} to the API key check: {detail}") from exc
    return client


# --- images and tasks ----------------------------------------------------------------------------------------------


def image_files(directory: Path) -> list[Path]:
    """The image files under ``directory`` (recursively, sorted, by suffix); empty when it has none yet.

    Raises:
        SetupError: not a directory.
    """
    if not directory.is_dir():
        raise SetupError(f"--images {directory}: no such directory")
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def upload_batches(
    files: Sequence[Path], max_files: int = MAX_FILES_PER_UPLOAD, max_bytes: int = MAX_BYTES_PER_UPLOAD
) -> Iterator[list[Path]]:
    """Split files into import requests LS accepts: at most ``max_files`` files and ``max_bytes`` bytes each.

    A single file larger than ``max_bytes`` goes alone (LS then answers for it).
    """
    batch: list[Path] = []
    size = 0
    for path in files:
        length = path.stat().st_size
        if batch and (len(batch) >= max_files or size + length > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += length
    if batch:
        yield batch


def uploaded_name(url: Any) -> str | None:
    """The original file name of an LS upload URL (``/data/upload/3/1a2b3c4d-cat.png`` -> ``cat.png``)."""
    if not isinstance(url, str) or "/data/upload/" not in url:
        return None
    return _UPLOAD_PREFIX.sub("", url.rsplit("/", 1)[-1])


def read_import_file(path: Path, image_key: str) -> list[dict[str, Any]]:
    """LS tasks from a JSON file (a list of tasks or one task) or JSON lines, each as ``{"data": {...}, ...}``.

    A task may be given bare (``{"image": ...}``) or as ``{"data": {...}, "predictions": [...]}``.

    Raises:
        SetupError: unreadable or not JSON, not tasks, or a task without ``image_key`` in its data.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SetupError(f"--import {path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        loaded: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            loaded = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise SetupError(f"--import {path}: not JSON or JSON lines ({exc.msg} at line {exc.lineno})") from exc
    items = loaded if isinstance(loaded, list) else [loaded]
    tasks: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise SetupError(f"--import {path}: task {index} is a {type(item).__name__}, expected an object")
        task = dict(item) if isinstance(item.get("data"), dict) else {"data": item}
        if image_key not in task["data"]:
            raise SetupError(f"--import {path}: task {index} has no {image_key!r} in its data (the config's Image)")
        tasks.append(task)
    if not tasks:
        raise SetupError(f"--import {path}: no tasks in it")
    return tasks


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


# --- the wiring ---------------------------------------------------------------------------------------------------


def ensure_project(client: Any, ls_url: str, spec: ProjectSpec) -> SetupReport:
    """Create or update the project of ``spec`` in LS so it matches; see the module docstring for the order.

    Args:
        client: from :func:`connect`.
        ls_url: LS's base URL (for the printed project URL and messages).
        spec: the wiring to make true.

    Returns:
        What was found and done; ``report.changed`` is False when LS already matched.

    Raises:
        SetupError: several projects have the title; LS refuses the config, the backend URL or the webhook
            (SSRF guard: the message names the LS setting), cannot reach the backend, or refuses the storage.
    """
    report = SetupReport(project_id=0, project_url="")
    project = _ensure_project(client, spec, report)
    report.project_id = project.id
    report.project_url = f"{ls_url}/projects/{project.id}/data"
    previous_backend_url = _ensure_ml_backend(client, project.id, spec, report)
    _ensure_webhook(client, project.id, spec, report, previous_backend_url)
    _ensure_project_uses_backend(client, project.id, spec, report)
    if spec.images is not None:
        _ensure_images(client, project.id, spec, spec.images, report)
    if spec.import_file is not None:
        _ensure_import(client, project.id, spec, spec.import_file, report)
    return report


def _call(what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the SDK; turn an LS error or a connection failure into a SetupError naming ``what``."""
    try:
        return func(*args, **kwargs)
    except httpx.HTTPError as exc:
        raise SetupError(f"{what}: Label Studio did not answer: {exc}") from exc
    except Exception as exc:
        error = _api_error(exc)
        if error is None:
            raise
        status, detail = error
        raise SetupError(f"{what}: Label Studio answered HTTP {status}: {detail}") from exc


def _find_project(client: Any, title: str) -> Any | None:
    projects = _call("listing projects", lambda: list(client.projects.list(title=title)))
    matches = [p for p in projects if p.title == title]
    if len(matches) > 1:
        ids = ", ".join(str(p.id) for p in matches)
        raise SetupError(f"{len(matches)} projects are titled {title!r} (ids {ids}): pass a unique --title")
    return matches[0] if matches else None


def _ensure_project(client: Any, spec: ProjectSpec, report: SetupReport) -> Any:
    project = _find_project(client, spec.title)
    if project is None:
        project = _call(
            f"creating project {spec.title!r}",
            client.projects.create,
            title=spec.title,
            label_config=spec.label_config,
            show_collab_predictions=True,
        )
        report.steps.append(Step(f"project {spec.title!r}", Change.CREATED, f"id {project.id}"))
        report.steps.append(Step("label config", Change.CREATED))
        return project
    report.steps.append(Step(f"project {spec.title!r}", Change.UNCHANGED, f"id {project.id}"))
    if (project.label_config or "").strip() == spec.label_config.strip():
        report.steps.append(Step("label config", Change.UNCHANGED))
    else:
        _call(
            f"updating the label config of project {project.id}",
            client.projects.update,
            id=project.id,
            label_config=spec.label_config,
        )
        report.steps.append(Step("label config", Change.UPDATED))
    return project


def _ssrf_error(noun: str, url: str, detail: str) -> SetupError:
    return SetupError(
        f"Label Studio refused {noun} {url}: {detail}; start Label Studio with "
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED=false (webhooks) and LABEL_STUDIO_ML_BLOCK_LOCAL_IP=false "
        "(ML backends), or set LABELLOOP_BACKEND_URL to an address it is allowed to reach"
    )


def _ls_error(exc: Exception, what: str, url: str, noun: str) -> SetupError | None:
    """The SetupError for an SDK failure while changing ``what`` (None when ``exc`` is not an LS error)."""
    if isinstance(exc, httpx.HTTPError):
        return SetupError(f"{what}: Label Studio did not answer: {exc}")
    error = _api_error(exc)
    if error is None:
        return None
    status, detail = error
    if _SSRF_BLOCKED in detail:
        return _ssrf_error(noun, url, detail)
    return SetupError(f"{what}: Label Studio answered HTTP {status}: {detail}")


def _wanted_ml_backend(spec: ProjectSpec) -> dict[str, Any]:
    wanted: dict[str, Any] = {"url": spec.backend_url, "title": spec.backend_title, "is_interactive": False}
    if spec.basic_auth:
        return wanted | {"auth_method": "BASIC_AUTH", "basic_auth_user": spec.basic_auth[0]}
    return wanted | {"auth_method": "NONE"}


def _current_ml_backend(backend: Any, spec: ProjectSpec) -> dict[str, Any]:
    current = {
        "url": backend.url,
        "title": backend.title,
        "is_interactive": bool(backend.is_interactive),
        "auth_method": backend.auth_method or "NONE",
    }
    if spec.basic_auth:
        current["basic_auth_user"] = backend.basic_auth_user
    return current


def _ml_backend_error(exc: Exception, spec: ProjectSpec) -> SetupError | None:
    error = _api_error(exc)
    if error is not None and error[0] == 400:  # LS's validation: it could not reach /health or /setup
        return _backend_unreachable(spec.backend_url, str(getattr(exc, "body", "")))
    return _ls_error(exc, f"ML backend {spec.backend_url}", spec.backend_url, "to connect the backend at")


def _ensure_ml_backend(client: Any, project_id: int, spec: ProjectSpec, report: SetupReport) -> str | None:
    """Connect (or update) labelloop's ML backend; return the URL it had before when it moved, else None."""
    wanted = _wanted_ml_backend(spec)
    backends = _call("listing ML backends", client.ml.list, project=project_id)
    ours = [b for b in backends if b.url.rstrip("/") == spec.backend_url.rstrip("/") or b.title == spec.backend_title]
    others = [b for b in backends if b not in ours]
    if others:
        urls = ", ".join(b.url for b in others)
        report.notes.append(f"the project has other ML backends ({urls}); Label Studio asks only the first one")
    secret = {"basic_auth_pass": spec.basic_auth[1]} if spec.basic_auth else {}
    previous: str | None = None
    try:
        if not ours:
            backend = client.ml.create(project=project_id, **wanted, **secret)
            change = Change.CREATED
        elif _current_ml_backend(ours[0], spec) == wanted and ours[0].state == "CO":
            backend, change = ours[0], Change.UNCHANGED
        else:  # an update makes LS check the backend again (/health, /setup); LS needs the project here
            if ours[0].url.rstrip("/") != spec.backend_url.rstrip("/"):
                previous = ours[0].url
            backend = client.ml.update(id=ours[0].id, project=project_id, **wanted, **secret)
            change = Change.UPDATED
    except Exception as exc:
        error = _ml_backend_error(exc, spec)
        if error is None:
            raise
        raise error from exc
    if backend.state != "CO":
        raise _backend_unreachable(spec.backend_url, str(backend.error_message or backend.readable_state))
    report.steps.append(Step(f"ML backend {spec.backend_url}", change, f"model version {backend.model_version}"))
    return previous


def _backend_unreachable(url: str, raw: str) -> SetupError:
    return SetupError(
        f"Label Studio cannot reach the backend at {url} ({_connection_reason(raw)}): start it "
        "(`labelloop serve`) and check that Label Studio can reach LABELLOOP_BACKEND_URL"
    )


def _ensure_webhook(
    client: Any, project_id: int, spec: ProjectSpec, report: SetupReport, previous_backend_url: str | None
) -> None:
    """One webhook to ``<backend>/webhook`` with the secret header and the loop's events.

    Ours are: the one at that URL (possibly added by LS when the backend was connected, header-less and for all
    events), one at the backend's previous URL, one carrying our header. The first is updated, the others deleted
    (each would deliver events again, or to a stale address).
    """
    wanted: dict[str, Any] = {
        "send_payload": True,
        "send_for_all_actions": False,
        "actions": list(WEBHOOK_ACTIONS),
        "headers": spec.webhook_headers,
        "is_active": True,
    }
    stale_url = previous_backend_url.rstrip("/") + "/webhook" if previous_backend_url else None
    hooks = [
        h
        for h in _call("listing webhooks", client.webhooks.list, project=str(project_id))
        if h.project == project_id
        and (h.url in (spec.webhook_url, stale_url) or WEBHOOK_SECRET_HEADER in (h.headers or {}))
    ]
    hooks.sort(key=lambda h: h.url != spec.webhook_url)
    what = f"webhook {spec.webhook_url}"
    secret = f"secret header {WEBHOOK_SECRET_HEADER}" if spec.webhook_secret else "no secret header"
    try:
        if not hooks:
            client.webhooks.create(project=project_id, url=spec.webhook_url, **wanted)
            report.steps.append(Step(what, Change.CREATED, secret))
            return
        hook = hooks[0]
        current = {
            "url": hook.url,
            "send_payload": hook.send_payload,
            "send_for_all_actions": hook.send_for_all_actions,
            "actions": sorted(hook.actions or []),
            "headers": dict(hook.headers or {}),
            "is_active": hook.is_active,
        }
        if current == {**wanted, "url": spec.webhook_url, "actions": sorted(wanted["actions"])}:
            report.steps.append(Step(what, Change.UNCHANGED, secret))
        else:
            client.webhooks.update(id=hook.id, url=spec.webhook_url, **wanted)
            report.steps.append(Step(what, Change.UPDATED, secret))
        for extra in hooks[1:]:
            client.webhooks.delete(id=extra.id)
            report.steps.append(Step(f"stale webhook {extra.url}", Change.UPDATED, "deleted"))
    except Exception as exc:
        error = _ls_error(exc, what, spec.webhook_url, "the webhook")
        if error is None:
            raise
        raise error from exc


def _ensure_project_uses_backend(client: Any, project_id: int, spec: ProjectSpec, report: SetupReport) -> None:
    project = _call(f"reading project {project_id}", client.projects.get, id=project_id)
    if project.show_collab_predictions and project.model_version == spec.backend_title:
        report.steps.append(Step("predictions shown to annotators", Change.UNCHANGED))
        return
    _call(
        f"updating project {project_id}",
        client.projects.update,
        id=project_id,
        show_collab_predictions=True,
        model_version=spec.backend_title,
    )
    report.steps.append(
        Step("predictions shown to annotators", Change.UPDATED, f"from ML backend {spec.backend_title!r}")
    )


def _task_count(client: Any, project_id: int) -> int:
    project = _call(f"reading project {project_id}", client.projects.get, id=project_id)
    return int(project.task_number or 0)


def _iter_tasks(client: Any, project_id: int) -> Iterable[Any]:
    tasks: list[Any] = _call("listing tasks", lambda: list(client.tasks.list(project=project_id, fields="all")))
    return tasks


def _ensure_images(client: Any, project_id: int, spec: ProjectSpec, images: Path, report: SetupReport) -> None:
    files = image_files(images)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        report.notes.append(f"no image files ({suffixes}) in {images} yet: add some and run setup again")
    root = spec.local_files_root
    if root is not None and images.resolve().is_relative_to(root.resolve()) and images.resolve() != root.resolve():
        _ensure_local_storage(client, project_id, images.resolve(), report, len(files))
    else:
        _upload_images(client, project_id, spec, files, report)


def _ensure_local_storage(client: Any, project_id: int, path: Path, report: SetupReport, count: int) -> None:
    what = f"local-files storage {path}"
    storages = [
        s
        for s in _call("listing local-files storages", client.import_storage.local.list, project=project_id)
        if Path(s.path) == path
    ]
    before = _task_count(client, project_id)
    try:
        if storages:
            storage = storages[0]
            change = Change.UNCHANGED
        else:
            storage = client.import_storage.local.create(
                project=project_id,
                path=str(path),
                regex_filter=IMAGE_REGEX,
                use_blob_urls=True,
                recursive_scan=True,
                title="labelloop images",
            )
            change = Change.CREATED
        client.import_storage.local.sync(id=storage.id)
    except Exception as exc:
        error = _api_error(exc)
        if error is None:
            raise
        hint = (
            "start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true"
            if "LOCAL_FILES_SERVING_ENABLED" in error[1]
            else "LABELLOOP_LS_LOCAL_FILES_ROOT must be Label Studio's LOCAL_FILES_DOCUMENT_ROOT, seen at the same path"
        )
        raise SetupError(f"Label Studio refused {what}: {error[1]}; {hint}") from exc
    added = _task_count(client, project_id) - before
    if added and change is Change.UNCHANGED:
        change = Change.UPDATED
    report.steps.append(Step(what, change, f"{_count(added, 'new task')}, {_count(count, 'image file')}"))


def _upload_images(client: Any, project_id: int, spec: ProjectSpec, files: list[Path], report: SetupReport) -> None:
    present = {uploaded_name((task.data or {}).get(spec.image_key)) for task in _iter_tasks(client, project_id)}
    new = [path for path in files if path.name not in present]
    what = f"images from {spec.images}"
    if not new:
        detail = f"all {len(files)} already uploaded" if files else "none to upload"
        report.steps.append(Step(what, Change.UNCHANGED, detail))
        return
    http = client._client_wrapper.httpx_client  # the SDK's authenticated client (handles PAT refresh)
    for batch in upload_batches(new):
        # one field name per file: LS keeps only the last file of a repeated name
        files_field = {f"file{i}": (path.name, path.read_bytes()) for i, path in enumerate(batch)}
        try:
            response = http.request(f"api/projects/{project_id}/import", method="POST", files=files_field)
        except httpx.HTTPError as exc:
            raise SetupError(f"uploading images: Label Studio did not answer: {exc}") from exc
        if response.status_code != 201:
            raise SetupError(
                f"uploading {len(batch)} images: Label Studio answered HTTP {response.status_code}: "
                f"{_detail(_json_or_text(response))}"
            )
        logger.info("uploaded %d images to project %d", len(batch), project_id)
    report.steps.append(Step(what, Change.UPDATED, f"{len(new)} uploaded, {len(files) - len(new)} already present"))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _ensure_import(client: Any, project_id: int, spec: ProjectSpec, path: Path, report: SetupReport) -> None:
    tasks = read_import_file(path, spec.image_key)
    present = {_canonical(task.data) for task in _iter_tasks(client, project_id)}
    new = [task for task in tasks if _canonical(task["data"]) not in present]
    what = f"tasks from {path}"
    if not new:
        report.steps.append(Step(what, Change.UNCHANGED, f"all {len(tasks)} already imported"))
        return
    _call(f"importing {path}", client.projects.import_tasks, id=project_id, request=new)
    report.steps.append(Step(what, Change.UPDATED, f"{len(new)} imported, {len(tasks) - len(new)} already present"))
