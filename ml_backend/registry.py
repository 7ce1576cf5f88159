"""The model registry: every training run and every adapter version, and which version each project serves.

One SQLite database at ``<data_dir>/registry.sqlite3`` shared by the web process(es) and the RQ worker (they
already share ``data_dir`` for adapters). Why SQLite rather than Redis: the history must survive a Redis restart
(Redis here keeps nothing on disk), it is queried (per project, newest first, by status) and a promotion changes
several rows at once, which SQLite does in one transaction. WAL mode lets the backends read while the worker
writes; every state change is one ``BEGIN IMMEDIATE`` transaction, so a crash leaves the previous state or the
next, never half of one.

Invariants:

- ``active`` holds at most one version per project; no row means the project serves the base model.
- The pointer only ever names a version whose adapter directory is complete on disk: :meth:`Registry.promote`
  and :meth:`Registry.rollback` check the files inside the transaction that flips it.
- Adapters live in ``<data_dir>/adapters/<version id>/``, written next to their place and renamed into it
  (:meth:`Registry.store_adapter`), so a half-copied adapter never has the final name.
- :meth:`Registry.prune` keeps the newest ``keep`` adapters of a project on disk, and always the active version
  and its parent (the instant rollback target).

Every method opens its own short-lived connection, so a ``Registry`` can be shared by threads and survives a
fork. Lookups of unknown ids raise :class:`NotFoundError`; refused state changes raise :class:`RegistryError`;
both are :class:`~ml_backend.exceptions.LabelloopError` with a message naming the id and the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import struct
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ml_backend.exceptions import LabelloopError

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
SCHEMA_VERSION = 1


class RegistryError(LabelloopError):
    """A state change the registry refuses (wrong state, adapter missing, other project); the message says why."""


class NotFoundError(RegistryError):
    """No run or version with that id."""


class RunStatus(StrEnum):
    """Lifecycle of a training run. Terminal: promoted, rejected, failed, cancelled."""

    QUEUED = "queued"
    EXPORTING = "exporting"
    TRAINING = "training"
    EVALUATING = "evaluating"
    RETRYING = "retrying"  # failed an attempt; RQ's Retry policy will run it again
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once nothing will change the run any more."""
        return self in TERMINAL_RUN_STATUSES


TERMINAL_RUN_STATUSES = frozenset({RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE_RUN_STATUSES = frozenset(set(RunStatus) - TERMINAL_RUN_STATUSES)


class VersionStatus(StrEnum):
    """A trained adapter: a candidate until the gate decides, then promoted (served at least once) or rejected."""

    CANDIDATE = "candidate"
    PROMOTED = "promoted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ModelVersion:
    """One trained adapter of one project.

    Attributes:
        id: ``p<project>-v<n>``; it appears in ``model_version`` strings as ``<base name>@<id>``.
        parent: the version that was active when the run started (None: the base model).
        adapter_path: absolute directory of the peft adapter (for the ``openai`` engine the same path must be
            visible to the inference server).
        pruned_at: when the adapter directory was deleted by :meth:`Registry.prune` (None: still on disk).
    """

    id: str
    project: int
    parent: str | None
    base_model: str
    adapter_path: str
    run_id: str | None
    dataset_hash: str | None
    dataset_size: int | None
    args: dict[str, Any]
    metrics: dict[str, Any]
    status: VersionStatus
    created_at: float
    promoted_at: float | None = None
    pruned_at: float | None = None

    @property
    def is_on_disk(self) -> bool:
        """Not pruned and its adapter files are all present."""
        return self.pruned_at is None and adapter_problem(Path(self.adapter_path)) is None


@dataclass(frozen=True)
class TrainingRun:
    """One attempt to train a project; ``version_id`` is set once an adapter was produced."""

    id: str
    project: int
    status: RunStatus
    trigger: str
    base_model: str
    parent_version: str | None
    run_dir: str
    created_at: float
    updated_at: float
    job_id: str | None = None
    version_id: str | None = None
    dataset_hash: str | None = None
    dataset_size: int | None = None
    args: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log_tail: str | None = None
    attempts: int = 0
    reviews: int | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def report_path(self) -> Path:
        """Where the HTML training report is (or will be) written."""
        return Path(self.run_dir) / "report.html"


@dataclass(frozen=True)
class Activation:
    """One flip of a project's active pointer (promotion or rollback)."""

    project: int
    version_id: str | None
    previous: str | None
    reason: str
    at: float


def adapter_problem(path: Path) -> str | None:  # noqa: PLR0911 - one return per problem
    """Why ``path`` is not a complete peft adapter directory, or None when it is.

    Complete means ``adapter_config.json`` parses as JSON and ``adapter_model.safetensors`` has a readable
    safetensors header whose tensors fit in the file (a truncated copy fails this). Never raises.
    """
    if not path.is_dir():
        return f"{path} is not a directory"
    try:
        json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{path}: adapter_config.json is missing"
    except (OSError, ValueError) as exc:
        return f"{path}: adapter_config.json is unreadable ({exc})"
    weights = path / "adapter_model.safetensors"
    try:
        size = weights.stat().st_size
        with weights.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len <= 0 or 8 + header_len > size:
                return f"{weights}: truncated (header of {header_len} bytes in a {size}-byte file)"
            header = json.loads(handle.read(header_len))
    except FileNotFoundError:
        return f"{path}: adapter_model.safetensors is missing"
    except (OSError, ValueError, struct.error) as exc:
        return f"{weights}: not a safetensors file ({exc})"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    if not ends:
        return f"{weights}: holds no tensors"
    if 8 + header_len + max(ends) > size:
        return f"{weights}: truncated (tensors end at byte {8 + header_len + max(ends)}, file has {size})"
    return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, project INTEGER NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    trigger TEXT NOT NULL, base_model TEXT NOT NULL, parent_version TEXT, run_dir TEXT NOT NULL,
    job_id TEXT, version_id TEXT, dataset_hash TEXT, dataset_size INTEGER, args TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}', error TEXT, log_tail TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    reviews INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, finished_at REAL,
    UNIQUE (project, seq)
);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs (project, created_at);
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY, project INTEGER NOT NULL, seq INTEGER NOT NULL, parent TEXT, base_model TEXT NOT NULL,
    adapter_path TEXT NOT NULL, run_id TEXT, dataset_hash TEXT, dataset_size INTEGER,
    args TEXT NOT NULL DEFAULT '{}', metrics TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL,
    created_at REAL NOT NULL, promoted_at REAL, pruned_at REAL, UNIQUE (project, seq)
);
CREATE INDEX IF NOT EXISTS versions_by_project ON versions (project, created_at);
CREATE TABLE IF NOT EXISTS active (
    project INTEGER PRIMARY KEY, version_id TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (project INTEGER PRIMARY KEY, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS activations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, project INTEGER NOT NULL, version_id TEXT, previous TEXT,
    reason TEXT NOT NULL, at REAL NOT NULL
);
"""

_RUN_FIELDS = {
    "status", "job_id", "version_id", "dataset_hash", "dataset_size", "args", "metrics", "error", "log_tail",
    "attempts", "reviews", "started_at", "finished_at", "parent_version", "base_model",
}  # fmt: skip
_JSON_FIELDS = {"args", "metrics"}


class Registry:
    """Runs, versions and active pointers in SQLite under ``data_dir``; safe across threads and processes."""

    def __init__(self, data_dir: Path) -> None:
        """Open (and create or migrate) ``<data_dir>/registry.sqlite3``.

        Raises:
            RegistryError: the database was written by a newer labelloop (unknown schema version).
        """
        self.data_dir = Path(data_dir).resolve()
        self.path = self.data_dir / "registry.sqlite3"
        self.adapters_dir = self.data_dir / "adapters"
        self.runs_dir = self.data_dir / "runs"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise RegistryError(f"{self.path}: schema {row[0]} is newer than this labelloop ({SCHEMA_VERSION})")

    # --- plumbing ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE takes the write lock up front, so read-then-write is atomic."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _run(row: Mapping[str, Any]) -> TrainingRun:
        return TrainingRun(
            id=row["id"], project=row["project"], status=RunStatus(row["status"]), trigger=row["trigger"],
            base_model=row["base_model"], parent_version=row["parent_version"], run_dir=row["run_dir"],
            created_at=row["created_at"], updated_at=row["updated_at"], job_id=row["job_id"],
            version_id=row["version_id"], dataset_hash=row["dataset_hash"], dataset_size=row["dataset_size"],
            args=json.loads(row["args"]), metrics=json.loads(row["metrics"]), error=row["error"],
            log_tail=row["log_tail"], attempts=row["attempts"], reviews=row["reviews"],
            started_at=row["started_at"], finished_at=row["finished_at"],
        )  # fmt: skip

    @staticmethod
    def _version(row: Mapping[str, Any]) -> ModelVersion:
        return ModelVersion(
            id=row["id"], project=row["project"], parent=row["parent"], base_model=row["base_model"],
            adapter_path=row["adapter_path"], run_id=row["run_id"], dataset_hash=row["dataset_hash"],
            dataset_size=row["dataset_size"], args=json.loads(row["args"]), metrics=json.loads(row["metrics"]),
            status=VersionStatus(row["status"]), created_at=row["created_at"], promoted_at=row["promoted_at"],
            pruned_at=row["pruned_at"],
        )  # fmt: skip

    @staticmethod
    def _next_seq(conn: sqlite3.Connection, table: str, project: int) -> int:
        row = conn.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table} WHERE project = ?", (project,)).fetchone()  # noqa: S608
        return int(row[0])

    # --- runs ---------------------------------------------------------------------------------------------------

    def create_run(
        self,
        project: int,
        *,
        trigger: str,
        base_model: str,
        reviews: int | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> TrainingRun:
        """Record a new queued run of ``project`` (its parent is the version active right now)."""
        now = time.time()
        with self._tx() as conn:
            seq = self._next_seq(conn, "runs", project)
            run_id = f"p{project}-r{seq}"
            parent = conn.execute("SELECT version_id FROM active WHERE project = ?", (project,)).fetchone()
            conn.execute(
                "INSERT INTO runs (id, project, seq, status, trigger, base_model, parent_version, run_dir, args,"
                " reviews, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, project, seq, RunStatus.QUEUED.value, trigger, base_model,
                    parent[0] if parent else None, str(self.runs_dir / run_id), json.dumps(dict(args or {})),
                    reviews, now, now,
                ),
            )  # fmt: skip
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        log.info("registry: run %s of project %s queued (%s)", run_id, project, trigger)
        return self._run(row)

    def get_run(self, run_id: str) -> TrainingRun:
        """The run ``run_id``.

        Raises:
            NotFoundError: no such run.
        """
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id!r}: no such run (see `labelloop runs list`)")
        return self._run(row)

    def list_runs(
        self, project: int | None = None, *, statuses: Collection[RunStatus] | None = None, limit: int = 100
    ) -> list[TrainingRun]:
        """Runs, newest first, optionally of one project and/or in the given statuses."""
        query = "SELECT * FROM runs WHERE 1 = 1"
        params: list[Any] = []
        if project is not None:
            query += " AND project = ?"
            params.append(project)
        if statuses is not None:
            query += f" AND status IN ({', '.join('?' for _ in statuses)})"
            params.extend(RunStatus(s).value for s in statuses)
        query += " ORDER BY created_at DESC, seq DESC LIMIT ?"
        params.append(limit)
        with self._connect() as conn:
            rows = conn.execute(query, params).fetchall()
        return [self._run(row) for row in rows]

    def update_run(self, run_id: str, *, expect: Collection[RunStatus] | None = None, **fields: Any) -> TrainingRun:
        """Change fields of a run in one transaction, only if its status is in ``expect`` (when given).

        Moving to a terminal status sets ``finished_at``; moving to exporting the first time sets ``started_at``.

        Raises:
            NotFoundError: no such run.
            RegistryError: an unknown field, or the run's status is not in ``expect`` (someone else — a cancel,
                the janitor — changed it first).
        """
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise RegistryError(f"update_run: unknown fields {sorted(unknown)}")
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"run {run_id!r}: no such run")
            current = RunStatus(row["status"])
            if expect is not None and current not in {RunStatus(s) for s in expect}:
                wanted = ", ".join(sorted(RunStatus(s).value for s in expect))
                raise RegistryError(f"run {run_id}: is {current.value}, expected one of {wanted}")
            values = dict(fields)
            if "status" in values:
                status = RunStatus(values["status"])
                values["status"] = status.value
                if status.is_terminal and row["finished_at"] is None:
                    values.setdefault("finished_at", now)
                if status is RunStatus.EXPORTING and row["started_at"] is None:
                    values.setdefault("started_at", now)
            for key in _JSON_FIELDS & set(values):
                values[key] = json.dumps(values[key])
            values["updated_at"] = now
            assignments = ", ".join(f"{key} = ?" for key in values)
            conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))  # noqa: S608
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._run(row)

    def last_run_started(self, project: int) -> float | None:
        """When the newest run of ``project`` was created (for the cool-down), or None."""
        with self._connect() as conn:
            row = conn.execute("SELECT MAX(created_at) FROM runs WHERE project = ?", (project,)).fetchone()
        return None if row[0] is None else float(row[0])

    def remember_project(self, project: int) -> None:
        """Record that labelloop has heard of ``project`` (durably: the periodic reconciliation walks these even
        after Redis lost everything)."""
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO projects (project, first_seen) VALUES (?, ?)", (project, time.time()))

    def projects(self) -> list[int]:
        """Every project heard of, or with a run or an active pointer."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT project FROM projects UNION SELECT project FROM runs UNION SELECT project FROM active"
            ).fetchall()
        return sorted(int(row[0]) for row in rows)

    # --- versions ---------------------------------------------------------------------------------------------

    def new_version_id(self, project: int) -> str:
        """Reserve nothing, just name the next version of ``project`` (``p<project>-v<n>``)."""
        with self._connect() as conn:
            return f"p{project}-v{self._next_seq(conn, 'versions', project)}"

    def store_adapter(self, source: Path, version_id: str) -> Path:
        """Copy the adapter files of ``source`` (a checkpoint directory) to ``adapters/<version_id>`` atomically.

        The files are copied into a hidden sibling, fsynced, checked with :func:`adapter_problem` and renamed
        into place, so the final directory is either absent or complete. An existing complete directory of
        the same name is kept (idempotent retry).

        Raises:
            RegistryError: ``source`` is not a complete adapter, or the copy is not (disk full, I/O error).
        """
        problem = adapter_problem(source)
        if problem:
            raise RegistryError(f"version {version_id}: cannot store the adapter: {problem}")
        final = self.adapters_dir / version_id
        if final.exists() and adapter_problem(final) is None:
            return final
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.adapters_dir / f".{version_id}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.mkdir()
            for item in source.iterdir():
                if item.is_file() and item.suffix in {".json", ".safetensors", ".md"}:
                    shutil.copyfile(item, tmp / item.name)
                    with (tmp / item.name).open("rb") as handle:
                        os.fsync(handle.fileno())
            problem = adapter_problem(tmp)
            if problem:
                raise RegistryError(f"version {version_id}: the copied adapter is incomplete: {problem}")
            if final.exists():
                shutil.rmtree(final)
            tmp.replace(final)
            dir_fd = os.open(self.adapters_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise RegistryError(f"version {version_id}: cannot store the adapter in {final}: {exc}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def add_version(
        self,
        run_id: str,
        adapter_path: Path,
        *,
        version_id: str | None = None,
        dataset_hash: str | None = None,
        dataset_size: int | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Record the adapter a run produced as a candidate version and link it to the run.

        Raises:
            NotFoundError: no such run.
            RegistryError: the adapter directory is incomplete, or the id is taken.
        """
        problem = adapter_problem(Path(adapter_path))
        if problem:
            raise RegistryError(f"run {run_id}: cannot record the version: {problem}")
        now = time.time()
        with self._tx() as conn:
            run = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if run is None:
                raise NotFoundError(f"run {run_id!r}: no such run")
            project = int(run["project"])
            seq = self._next_seq(conn, "versions", project)
            vid = version_id or f"p{project}-v{seq}"
            if conn.execute("SELECT 1 FROM versions WHERE id = ?", (vid,)).fetchone():
                raise RegistryError(f"version {vid}: already recorded")
            conn.execute(
                "INSERT INTO versions (id, project, seq, parent, base_model, adapter_path, run_id, dataset_hash,"
                " dataset_size, args, metrics, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?)",
                (
                    vid, project, seq, run["parent_version"], run["base_model"], str(Path(adapter_path).resolve()),
                    run_id, dataset_hash, dataset_size, json.dumps(dict(args or {})), VersionStatus.CANDIDATE.value,
                    now,
                ),
            )  # fmt: skip
            conn.execute("UPDATE runs SET version_id = ?, updated_at = ? WHERE id = ?", (vid, now, run_id))
            row = conn.execute("SELECT * FROM versions WHERE id = ?", (vid,)).fetchone()
        return self._version(row)

    def get_version(self, version_id: str) -> ModelVersion:
        """The version ``version_id``.

        Raises:
            NotFoundError: no such version.
        """
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"version {version_id!r}: no such version (see `labelloop models list`)")
        return self._version(row)

    def list_versions(self, project: int | None = None, *, limit: int = 100) -> list[ModelVersion]:
        """Versions, newest first, optionally of one project."""
        query = "SELECT * FROM versions"
        params: list[Any] = []
        if project is not None:
            query += " WHERE project = ?"
            params.append(project)
        query += " ORDER BY created_at DESC, seq DESC LIMIT ?"
        params.append(limit)
        with self._connect() as conn:
            rows = conn.execute(query, params).fetchall()
        return [self._version(row) for row in rows]

    def active(self, project: int) -> ModelVersion | None:
        """The version ``project`` serves, or None for the base model."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT v.* FROM active a JOIN versions v ON v.id = a.version_id WHERE a.project = ?", (project,)
            ).fetchone()
        return None if row is None else self._version(row)

    def active_map(self) -> dict[int, ModelVersion]:
        """Project -> active version, for every project that serves an adapter (absent: the base model)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT v.* FROM active a JOIN versions v ON v.id = a.version_id").fetchall()
        return {int(row["project"]): self._version(row) for row in rows}

    def activations(self, project: int, *, limit: int = 50) -> list[Activation]:
        """The history of ``project``'s active pointer, newest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM activations WHERE project = ? ORDER BY id DESC LIMIT ?", (project, limit)
            ).fetchall()
        return [
            Activation(row["project"], row["version_id"], row["previous"], row["reason"], row["at"]) for row in rows
        ]

    def _flip(self, conn: sqlite3.Connection, project: int, version_id: str | None, reason: str, now: float) -> None:
        previous = conn.execute("SELECT version_id FROM active WHERE project = ?", (project,)).fetchone()
        if version_id is None:
            conn.execute("DELETE FROM active WHERE project = ?", (project,))
        else:
            conn.execute(
                "INSERT INTO active (project, version_id, updated_at) VALUES (?, ?, ?) ON CONFLICT (project) DO "
                "UPDATE SET version_id = excluded.version_id, updated_at = excluded.updated_at",
                (project, version_id, now),
            )
        conn.execute(
            "INSERT INTO activations (project, version_id, previous, reason, at) VALUES (?, ?, ?, ?, ?)",
            (project, version_id, previous[0] if previous else None, reason, now),
        )

    def promote(self, version_id: str, *, metrics: Mapping[str, Any] | None = None) -> ModelVersion:
        """Make ``version_id`` its project's active version, and mark it and its run promoted, in one transaction.

        Raises:
            NotFoundError: no such version.
            RegistryError: its adapter directory is not complete on disk, it was rejected, or it was pruned.
        """
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"version {version_id!r}: no such version")
            version = self._version(row)
            if version.status is VersionStatus.REJECTED:
                raise RegistryError(f"version {version_id}: was rejected by the gate; it cannot be promoted")
            problem = adapter_problem(Path(version.adapter_path))
            if version.pruned_at is not None or problem:
                raise RegistryError(f"version {version_id}: adapter not on disk ({problem or 'pruned'})")
            merged = {**version.metrics, **dict(metrics or {})}
            conn.execute(
                "UPDATE versions SET status = ?, promoted_at = COALESCE(promoted_at, ?), metrics = ? WHERE id = ?",
                (VersionStatus.PROMOTED.value, now, json.dumps(merged), version_id),
            )
            self._flip(conn, version.project, version_id, "promoted", now)
            if version.run_id:
                conn.execute(
                    "UPDATE runs SET status = ?, metrics = ?, finished_at = COALESCE(finished_at, ?), updated_at = ?"
                    " WHERE id = ?",
                    (RunStatus.PROMOTED.value, json.dumps(merged), now, now, version.run_id),
                )
            row = conn.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
        log.info("registry: project %s now serves %s", version.project, version_id)
        return self._version(row)

    def reject(self, version_id: str, *, reason: str, metrics: Mapping[str, Any] | None = None) -> ModelVersion:
        """Mark a candidate rejected by the gate, and its run rejected with ``reason``, in one transaction.

        Raises:
            NotFoundError: no such version.
            RegistryError: the version is already promoted.
        """
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"version {version_id!r}: no such version")
            version = self._version(row)
            if version.status is VersionStatus.PROMOTED:
                raise RegistryError(f"version {version_id}: already promoted; roll back instead")
            merged = {**version.metrics, **dict(metrics or {})}
            conn.execute(
                "UPDATE versions SET status = ?, metrics = ? WHERE id = ?",
                (VersionStatus.REJECTED.value, json.dumps(merged), version_id),
            )
            if version.run_id:
                conn.execute(
                    "UPDATE runs SET status = ?, metrics = ?, error = ?, finished_at = COALESCE(finished_at, ?),"
                    " updated_at = ? WHERE id = ?",
                    (RunStatus.REJECTED.value, json.dumps(merged), reason, now, now, version.run_id),
                )
            row = conn.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
        log.info("registry: version %s rejected: %s", version_id, reason)
        return self._version(row)

    def rollback(self, project: int, to: str | None = None) -> ModelVersion | None:
        """Point ``project`` back at an earlier version and return it (None: the base model).

        ``to=None`` goes to the active version's parent (what served before it); ``to="base"`` to the base model;
        otherwise ``to`` must be a promoted version of this project whose adapter is still on disk.

        Raises:
            NotFoundError: no such version.
            RegistryError: the version belongs to another project, was never promoted, or was pruned; or there
                is nothing to roll back (the project already serves the base model).
        """
        now = time.time()
        with self._tx() as conn:
            current = conn.execute("SELECT version_id FROM active WHERE project = ?", (project,)).fetchone()
            if to is None:
                if current is None:
                    raise RegistryError(f"project {project}: serves the base model; nothing to roll back")
                parent = conn.execute("SELECT parent FROM versions WHERE id = ?", (current[0],)).fetchone()
                target = parent[0] if parent else None
            else:
                target = None if to == "base" else to
            if target is not None:
                row = conn.execute("SELECT * FROM versions WHERE id = ?", (target,)).fetchone()
                if row is None:
                    raise NotFoundError(f"version {target!r}: no such version (see `labelloop models list`)")
                version = self._version(row)
                if version.project != project:
                    raise RegistryError(f"version {target}: belongs to project {version.project}, not {project}")
                if version.status is not VersionStatus.PROMOTED:
                    raise RegistryError(f"version {target}: is {version.status.value}; only promoted versions")
                problem = adapter_problem(Path(version.adapter_path))
                if version.pruned_at is not None or problem:
                    raise RegistryError(f"version {target}: adapter not on disk ({problem or 'pruned'})")
            self._flip(conn, project, target, "rollback", now)
        log.info("registry: project %s rolled back to %s", project, target or "the base model")
        return None if target is None else self.get_version(target)

    def prune(self, project: int, keep: int) -> list[ModelVersion]:
        """Delete the adapters of ``project`` beyond the newest ``keep``, never the active one or its parent.

        The versions are marked pruned in one transaction first, then their directories (only ever under
        ``<data_dir>/adapters``) are deleted; a crash in between leaves an orphan directory, never a version
        that claims an adapter it lacks. Returns the pruned versions.
        """
        now = time.time()
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM versions WHERE project = ? AND pruned_at IS NULL ORDER BY created_at DESC, seq DESC",
                (project,),
            ).fetchall()
            versions = [self._version(row) for row in rows]
            protected: set[str] = set()
            active = conn.execute("SELECT version_id FROM active WHERE project = ?", (project,)).fetchone()
            if active:
                protected.add(active[0])
                parent = conn.execute("SELECT parent FROM versions WHERE id = ?", (active[0],)).fetchone()
                if parent and parent[0]:
                    protected.add(parent[0])
            doomed = [v for v in versions[keep:] if v.id not in protected]
            for version in doomed:
                conn.execute("UPDATE versions SET pruned_at = ? WHERE id = ?", (now, version.id))
        root = self.adapters_dir.resolve()
        for version in doomed:
            path = Path(version.adapter_path).resolve()
            if path.parent == root:
                shutil.rmtree(path, ignore_errors=True)
            else:
                log.warning("registry: not deleting %s of %s: outside %s", path, version.id, root)
        if doomed:
            log.info("registry: pruned %s adapter(s) of project %s: %s", len(doomed), project, [v.id for v in doomed])
        return doomed
