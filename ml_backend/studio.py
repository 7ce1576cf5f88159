"""A local Label Studio for the demo and the tests.

Label Studio (LS) runs as a subprocess of the ``label-studio`` executable of its own virtual environment; this
module never imports Django or Label Studio. Two costs shape it (measured with LS 1.23.2, 2 cores):

- The first start migrates an empty SQLite database: about 55 s of one core. :func:`ensure_template` does that
  once per LS version (``label-studio init --quiet`` with no user) and caches the migrated, user-less data dir as
  ``<cache>/ls-template-<version>``.
- A start from a copy of that template takes about 5 s. :class:`LocalLabelStudio` copies the template, creates
  the admin user (legacy API token enabled) from environment variables and serves on 127.0.0.1 on a free port.

LS is always started from a *clean* environment (:func:`label_studio_env`): it reads plain ``USERNAME``,
``PASSWORD``, ``HOST``, ``PORT``, ``DEBUG`` and ``LOG_LEVEL`` when the ``LABEL_STUDIO_`` ones are unset, and writes
to ``~/.local/share`` unless told otherwise, so nothing of the caller's environment or home directory reaches it.
LS moves to port+1 silently when its port is busy; :meth:`LocalLabelStudio.start` checks which port the server
actually bound and tries another free port when it is not ours.

Command line (dev tooling; the Makefile's ``ls-env`` target and ``make demo`` call it)::

    python -m ml_backend.studio template --ls-venv .ls-venv [--cache DIR]
    python -m ml_backend.studio start --ls-venv .ls-venv [--state-dir DIR] [--port P]
    python -m ml_backend.studio stop [--state-dir DIR]

Failures raise :class:`StudioError` whose message says what failed and, for a server or ``init`` that did not
come up, ends with the tail of its log. Tokens and passwords are never logged.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

logger = logging.getLogger(__name__)

DEFAULT_USERNAME = "admin@example.com"
HOST = "127.0.0.1"
TEMPLATE_PREFIX = "ls-template-"
PID_FILE_NAME = "label-studio.pid"
STATE_FILE_NAME = "label-studio.json"
DB_FILE_NAME = "label_studio.sqlite3"
POLL_INTERVAL = 0.2
LOG_TAIL_LINES = 40

# What LS (through Django's runserver) prints once it has bound its socket, and what it prints when it skips a
# busy port (label_studio/server.py `_get_free_port`).
_SERVING_RE = re.compile(r"Starting development server at https?://[^\s/]+:(\d+)/")
_MOVED_RE = re.compile(r"Trying to start at (\d+)")
_VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+)*([A-Za-z0-9.+_-]*)")
# The settings that keep LS offline, quiet and open to a loopback ML backend, webhook receiver and local files.
_OFFLINE_ENV = {
    "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
    "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "PYTHONUNBUFFERED": "1",  # the log must show "Starting development server at ..." as it happens
}


class StudioError(RuntimeError):
    """Label Studio could not be prepared, started, reached or stopped; the message says which and why."""


class PortMovedError(StudioError):
    """Label Studio bound another port than the one it was given (the given one was taken meanwhile)."""

    def __init__(self, expected: int, actual: int, detail: str = "") -> None:
        message = f"Label Studio was started on port {expected} but moved to port {actual} (port was busy)"
        super().__init__(message + detail)
        self.expected = expected
        self.actual = actual


# --- pure helpers (unit-tested) ------------------------------------------------------------------------------


def parse_version(text: str) -> str:
    """Validate the version string printed by the LS venv's Python, e.g. ``"1.23.2\\n"`` -> ``"1.23.2"``.

    Raises:
        StudioError: the text is not a plain version (it becomes part of a directory name).
    """
    version = text.strip()
    if not _VERSION_RE.fullmatch(version):
        raise StudioError(f"could not read the label-studio version: expected e.g. '1.23.2', got {text.strip()!r}")
    return version


def served_port(log_text: str) -> int | None:
    """The port Django's runserver reports having bound in an LS log, or None while it has not bound one yet."""
    matches = _SERVING_RE.findall(log_text)
    return int(matches[-1]) if matches else None


def check_served_port(log_text: str, expected: int) -> bool:
    """Whether the LS log shows the server bound ``expected``.

    Returns False while the log shows neither a bind nor a move (keep waiting).

    Raises:
        PortMovedError: the log shows LS skipped ``expected`` (busy) or bound another port.
    """
    moved = _MOVED_RE.findall(log_text)
    if moved:
        raise PortMovedError(expected, int(moved[-1]))
    port = served_port(log_text)
    if port is None:
        return False
    if port != expected:
        raise PortMovedError(expected, port)
    return True


def label_studio_env(
    ls_venv: Path,
    *,
    home: Path,
    data_dir: Path,
    files_root: Path | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    user_token: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment for a ``label-studio`` subprocess; nothing is inherited from the caller.

    Without ``username`` the environment creates no user (``label-studio init`` then only migrates). With it,
    ``password`` and ``user_token`` are required and the organization created at start has legacy API tokens
    enabled. ``files_root`` turns on local-files serving under that directory. ``port`` sets the ``HOST`` that
    LS hands to ML backends (``http://127.0.0.1:<port>``). ``extra`` is added last (e.g. a WEBHOOK_TIMEOUT).

    Raises:
        StudioError: a user is requested without a password or with a token LS would ignore (<= 5 characters).
    """
    env = {
        "PATH": f"{ls_venv / 'bin'}{os.pathsep}{os.defpath}",
        "HOME": str(home),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        **_OFFLINE_ENV,
    }
    if files_root is None:
        env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "false"
    else:
        env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
        env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(files_root)
    if port is not None:
        env["LABEL_STUDIO_HOST"] = f"http://{HOST}:{port}"
    if username is not None:
        if not password or not user_token or len(user_token) <= 5:
            raise StudioError("a Label Studio user needs a password and a token of more than 5 characters")
        env["LABEL_STUDIO_USERNAME"] = username
        env["LABEL_STUDIO_PASSWORD"] = password
        env["LABEL_STUDIO_USER_TOKEN"] = user_token
        env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] = "true"  # noqa: S105 - a switch, not a secret
    env.update(extra or {})
    return env


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _with_log(message: str, path: Path) -> str:
    tail = log_tail(path)
    return f"{message}\n--- last lines of {path} ---\n{tail}" if tail else f"{message} (log {path} is empty)"


# --- template ------------------------------------------------------------------------------------------------


def _executable(ls_venv: Path) -> Path:
    exe = ls_venv / "bin" / "label-studio"
    if not exe.is_file():
        raise StudioError(f"no label-studio executable at {exe}: build the venv with `make ls-env`")
    return exe


def label_studio_version(ls_venv: Path) -> str:
    """The installed label-studio version of a venv, read from package metadata (no server, no data dir).

    ``label-studio --version`` is not used: it migrates ``~/.local/share/label-studio`` and then starts a server.

    Raises:
        StudioError: the venv has no label-studio, or its Python failed.
    """
    _executable(ls_venv)
    python = ls_venv / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('label-studio'))"
    done = subprocess.run(
        [str(python), "-c", code],
        env={"PATH": os.defpath, "HOME": tempfile.gettempdir()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise StudioError(f"{python} could not read the label-studio version: {done.stderr.strip()[-500:]}")
    return parse_version(done.stdout)


def _is_data_dir(path: Path) -> bool:
    return (path / DB_FILE_NAME).is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the duration of the block."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process holding %s", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_template(ls_venv: Path, cache_dir: Path, *, timeout: float = 900.0) -> Path:
    """Return a migrated, user-less LS data dir for the venv's LS version, building it once if needed.

    The template is ``cache_dir/ls-template-<version>``; a new LS version gets a new one. It is built with
    ``label-studio init --quiet`` in a temporary directory beside it and renamed into place, so it either exists
    complete or not at all. A file lock makes concurrent callers wait for one build. Leftovers of interrupted
    builds are removed.

    Raises:
        StudioError: no label-studio in the venv, or ``init`` failed or exceeded ``timeout`` seconds (the
            message ends with the tail of its log).
    """
    ls_venv, cache_dir = ls_venv.absolute(), cache_dir.absolute()
    exe = _executable(ls_venv)
    version = label_studio_version(ls_venv)
    final = cache_dir / f"{TEMPLATE_PREFIX}{version}"
    if _is_data_dir(final):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir / f"{TEMPLATE_PREFIX}{version}.lock"):
        if _is_data_dir(final):
            return final
        for stale in cache_dir.glob(f".{final.name}.build-*"):
            logger.info("removing an interrupted template build: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # not a data dir: damaged by hand; rebuild
            shutil.rmtree(final)
        build = Path(tempfile.mkdtemp(prefix=f".{final.name}.build-", dir=cache_dir))
        logger.info("migrating a Label Studio %s template data dir (30-60 s of one core)", version)
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="ls-init-home-") as home_name:
                home = Path(home_name)
                log_path = home / "init.log"
                env = label_studio_env(ls_venv, home=home, data_dir=build)
                with log_path.open("wb") as log:
                    try:
                        done = subprocess.run(
                            [str(exe), "init", "--quiet"],
                            env=env,
                            cwd=home,
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            timeout=timeout,
                            check=False,
                        )
                    except subprocess.TimeoutExpired as exc:
                        raise StudioError(
                            _with_log(f"`label-studio init` took longer than {timeout:.0f} s", log_path)
                        ) from exc
                if done.returncode != 0 or not _is_data_dir(build):
                    raise StudioError(
                        _with_log(f"`label-studio init` failed (exit code {done.returncode}) in {build}", log_path)
                    )
            build.rename(final)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    logger.info("template %s ready in %.1f s", final, time.monotonic() - started)
    return final


# --- server --------------------------------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``port`` of ``host`` right now.

    Binds with SO_REUSEADDR, as servers (LS's runserver included) do, so closed connections lingering in
    TIME_WAIT do not count; a live listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class LocalLabelStudio:
    """One Label Studio server on 127.0.0.1, its data, files root and log under ``root``.

    Layout: ``root/data`` (the LS data dir: SQLite + media, copied from ``template``), ``root/files`` (the
    local-files document root), ``root/home`` (LS's HOME), ``root/label-studio.log``. Without ``root`` a temporary
    directory is used and removed by :meth:`stop`. A ``root/data`` that already holds a database is reused as it
    is (restart), so the same credentials must be passed again.

    The admin user ``username``/``password`` with the legacy token ``legacy_token`` (sent as
    ``Authorization: Token <key>``) is created at the first start; the defaults are random per instance.
    ``port=None`` picks a free port and, if LS still ends up elsewhere, retries up to ``port_attempts`` times; a
    given ``port`` is tried once. ``extra_env`` is added to LS's clean environment.

    Example::

        with LocalLabelStudio(ls_venv, ensure_template(ls_venv, cache)) as ls:
            client = LabelStudio(base_url=ls.url, api_key=ls.legacy_token)
    """

    ls_venv: Path
    template: Path
    root: Path | None = None
    username: str = DEFAULT_USERNAME
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    legacy_token: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)
    port: int | None = None
    start_timeout: float = 120.0
    stop_timeout: float = 10.0
    port_attempts: int = 3
    extra_env: Mapping[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _bound_port: int | None = field(default=None, init=False, repr=False)
    _owns_root: bool = field(default=False, init=False, repr=False)
    _detached: bool = field(default=False, init=False, repr=False)
    _pid_file: Path | None = field(default=None, init=False, repr=False)
    _pat: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # LS runs with its HOME as working directory: relative paths would point elsewhere there.
        self.ls_venv, self.template = self.ls_venv.absolute(), self.template.absolute()
        if self.root is not None:
            self.root = self.root.absolute()

    # -- layout ------------------------------------------------------------------------------------------------

    def _root(self) -> Path:
        if self.root is None:
            raise StudioError("this LocalLabelStudio has no root yet: call start() first")
        return self.root

    @property
    def data_dir(self) -> Path:
        """LS's data dir (SQLite database, ``media/upload``, ``.env`` with the secret key)."""
        return self._root() / "data"

    @property
    def files_root(self) -> Path:
        """LOCAL_FILES_DOCUMENT_ROOT: local-files storages must point at directories under it."""
        return self._root() / "files"

    @property
    def home(self) -> Path:
        """The HOME LS runs with, so nothing lands in the real ``~/.local/share``."""
        return self._root() / "home"

    @property
    def log_path(self) -> Path:
        """LS's stdout and stderr (appended to across starts and port attempts)."""
        return self._root() / "label-studio.log"

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when it is not running under this object."""
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``.

        Raises:
            StudioError: the server has not been started.
        """
        if self._bound_port is None:
            raise StudioError("Label Studio is not running: call start() first")
        return f"http://{HOST}:{self._bound_port}"

    @property
    def running(self) -> bool:
        """Whether the server process started by this object is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, *, detach: bool = False, pid_file: Path | None = None) -> Self:
        """Copy the template (unless ``data_dir`` already holds a database), launch LS and wait for ``/health``.

        With ``detach=True`` LS runs in its own session and outlives this process; stop it with :meth:`stop`
        from here or :func:`stop_pid_file` from anywhere. ``pid_file`` (written once LS answers) records its pid.

        Raises:
            PortMovedError: LS kept landing on another port than ours (every attempt; a given ``port`` gets one).
            StudioError: already running; the template is not a data dir; ``data_dir`` exists without a
                database; LS exited or did not answer within ``start_timeout`` seconds (the message ends with the
                tail of :attr:`log_path`); LS refused ``legacy_token`` (a reused data dir with other credentials).
                Nothing is left running after a failure; ``root`` (with the log) is kept.
        """
        if self.running:
            raise StudioError(f"Label Studio is already running at {self.url} (pid {self.pid})")
        if not _is_data_dir(self.template):
            raise StudioError(f"{self.template} is not a Label Studio data dir: build it with ensure_template()")
        exe = _executable(self.ls_venv)
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="labelloop-ls-"))
            self._owns_root = True
        for path in (self.files_root, self.home):
            path.mkdir(parents=True, exist_ok=True)
        if not _is_data_dir(self.data_dir):
            if self.data_dir.exists():
                raise StudioError(f"{self.data_dir} exists but holds no Label Studio database: remove it first")
            shutil.copytree(self.template, self.data_dir, symlinks=True)  # cp -a: modes, times, links
        self._detached = detach
        attempts = 1 if self.port is not None else max(1, self.port_attempts)
        for attempt in range(1, attempts + 1):
            port = self.port if self.port is not None else free_port()
            try:
                self._launch(exe, port, detach=detach)
                self._check_legacy_token()
                break
            except PortMovedError as exc:
                self._terminate()
                if attempt == attempts:
                    detail = _with_log(f"; gave up after {attempts} attempt(s)", self.log_path)
                    raise PortMovedError(exc.expected, exc.actual, detail) from exc
                logger.warning("%s; retrying on another port", exc)
            except BaseException:
                self._terminate()
                raise
        if pid_file is not None:
            pid_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = pid_file.with_name(pid_file.name + ".tmp")
            tmp.write_text(f"{self.pid}\n", encoding="utf-8")
            tmp.replace(pid_file)
            self._pid_file = pid_file
        return self

    def _launch(self, exe: Path, port: int, *, detach: bool) -> None:
        env = label_studio_env(
            self.ls_venv,
            home=self.home,
            data_dir=self.data_dir,
            files_root=self.files_root,
            port=port,
            username=self.username,
            password=self.password,
            user_token=self.legacy_token,
            extra=self.extra_env,
        )
        with self.log_path.open("ab") as log:
            log.write(f"--- labelloop: starting label-studio on {HOST}:{port} ---\n".encode())
            log.flush()
            offset = log.tell()  # only this attempt's output counts when checking the port
            logger.info("starting Label Studio on %s:%d (data %s, log %s)", HOST, port, self.data_dir, self.log_path)
            started = time.monotonic()
            self._proc = subprocess.Popen(
                [str(exe), "start", "--no-browser", "--internal-host", HOST, "--port", str(port)],
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        self._wait_ready(self._proc, port, offset, started + self.start_timeout)
        self._bound_port = port
        logger.info(
            "Label Studio ready at http://%s:%d in %.1f s (pid %d)", HOST, port, time.monotonic() - started, self.pid
        )

    def _check_legacy_token(self) -> None:
        """Raise StudioError unless LS accepts ``Authorization: Token <legacy_token>``."""
        response = httpx.get(
            f"{self.url}/api/projects/",
            params={"page_size": 1},
            headers={"Authorization": f"Token {self.legacy_token}"},
            timeout=30.0,
        )
        if response.status_code != 200:
            raise StudioError(
                f"Label Studio at {self.url} refuses the legacy token (HTTP {response.status_code}: "
                f"{response.text[:200]}): the data dir's admin user has other credentials, or its organization "
                "was created with legacy tokens disabled (a template must hold no user)"
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, log_offset: int, deadline: float) -> None:
        """Poll until LS answers /health on ``port`` and its log shows it bound that port itself."""
        health = f"http://{HOST}:{port}/health"
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    problem = f"Label Studio exited with code {code} before answering"
                    raise StudioError(_with_log(problem, self.log_path))
                if check_served_port(self._read_log(log_offset), port) and _answers_up(client, health):
                    return
                if time.monotonic() > deadline:
                    problem = f"Label Studio did not answer {health} within {self.start_timeout:.0f} s"
                    raise StudioError(_with_log(problem, self.log_path))
                time.sleep(POLL_INTERVAL)

    def _read_log(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def _terminate(self) -> None:
        """Stop the process started by this object (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        proc, self._proc, self._bound_port = self._proc, None, None
        if proc is None or proc.poll() is not None:
            return
        _signal(proc.pid, signal.SIGTERM, group=self._detached)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            logger.warning("Label Studio (pid %d) ignored SIGTERM for %.0f s; killing it", proc.pid, self.stop_timeout)
            _signal(proc.pid, signal.SIGKILL, group=self._detached)
            proc.wait()

    def stop(self) -> None:
        """Stop the server and wait for it to exit; remove the pid file and a temporary root. Idempotent.

        Never raises for a server that is already gone.
        """
        pid = self.pid
        self._terminate()
        if pid is not None:
            logger.info("Label Studio (pid %d) stopped", pid)
        if self._pid_file is not None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                if int(self._pid_file.read_text(encoding="utf-8").strip()) == pid:
                    self._pid_file.unlink()
            self._pid_file = None
        if self._owns_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root, self._owns_root = None, False
        self._detached = False

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- tokens and state --------------------------------------------------------------------------------------

    def create_personal_access_token(self) -> str:
        """A personal access token (PAT, a JWT refresh token) for the admin user, created once per instance.

        Logs in through the web form (csrftoken from ``GET /user/login/``, form ``POST``, then ``POST /api/token/``
        with ``X-CSRFToken`` and ``Referer``). LS allows one active PAT per user, so the first one is cached and
        returned again. Exchange it at ``POST /api/token/refresh/`` for a 5-minute ``Bearer`` access token.

        Raises:
            StudioError: not running, the login was refused, or LS would not create a token (e.g. this user
                already has one that another process created).
        """
        if self._pat is not None:
            return self._pat
        url = self.url
        with httpx.Client(base_url=url, timeout=30.0, follow_redirects=False) as client:
            page = client.get("/user/login/")
            csrf = client.cookies.get("csrftoken")
            if page.status_code != 200 or not csrf:
                raise StudioError(f"GET {url}/user/login/ answered {page.status_code} without a csrftoken cookie")
            login = client.post(
                "/user/login/",
                data={"email": self.username, "password": self.password, "csrfmiddlewaretoken": csrf},
                headers={"Referer": f"{url}/user/login/"},
            )
            if login.status_code != 302 or not client.cookies.get("sessionid"):
                raise StudioError(f"logging in to {url} as {self.username} failed: HTTP {login.status_code}")
            created = client.post(
                "/api/token/",
                headers={"X-CSRFToken": client.cookies.get("csrftoken") or csrf, "Referer": f"{url}/"},
            )
            if created.status_code != 201:
                raise StudioError(f"POST {url}/api/token/ answered {created.status_code}: {created.text[:300]}")
            token = created.json().get("token")
        if not isinstance(token, str) or not token:
            raise StudioError(f"POST {url}/api/token/ returned no token")
        self._pat = token
        return token

    def state(self) -> dict[str, Any]:
        """What another process needs to use this server: url, credentials, pid and paths (contains secrets)."""
        return {
            "url": self.url,
            "pid": self.pid,
            "username": self.username,
            "password": self.password,
            "legacy_token": self.legacy_token,
            "data_dir": str(self.data_dir),
            "files_root": str(self.files_root),
            "log_path": str(self.log_path),
        }


def _answers_up(client: httpx.Client, url: str) -> bool:
    try:
        response = client.get(url)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == "UP"


def _signal(pid: int, sig: signal.Signals, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


# --- pid files (make demo / make stop) -----------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def is_label_studio_process(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process running the ``label-studio`` executable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return any(Path(arg).name == "label-studio" for arg in _cmdline(pid)[:2])


def _exited(pid: int) -> bool:
    """Whether ``pid`` has fully exited: gone, or a zombie whose other threads (holding its sockets) are gone too."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        threads = sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[:1] == ["Z"] and threads <= 1


def _read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file``, or None when there is no file.

    Raises:
        StudioError: the file does not hold a pid.
    """
    try:
        text = pid_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise StudioError(f"{pid_file} does not hold a process id: {text[:40]!r}")
    return int(text)


def stop_pid_file(pid_file: Path, *, timeout: float = 10.0) -> bool:
    """Stop the Label Studio whose pid ``pid_file`` holds, and remove the file.

    The process group is sent SIGTERM (SIGKILL after ``timeout`` seconds) only if the pid still belongs to a
    ``label-studio`` process; a pid that has exited or now belongs to another program is left alone (logged).

    Returns:
        True if a Label Studio was stopped; False if there was nothing to stop (no file, no such process, or
        not a label-studio process).

    Raises:
        StudioError: the file does not hold a pid, or the process did not exit even after SIGKILL.
    """
    pid = _read_pid(pid_file)
    if pid is None:
        return False
    if not is_label_studio_process(pid):
        logger.warning("pid %d from %s is not a running label-studio; not signalling it", pid, pid_file)
        pid_file.unlink(missing_ok=True)
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if sig == signal.SIGKILL:
            if not is_label_studio_process(pid):
                raise StudioError(f"Label Studio (pid {pid}) did not finish exiting within {timeout:.0f} s")
            logger.warning("Label Studio (pid %d) ignored SIGTERM for %.0f s; killing it", pid, timeout)
        _signal(pid, sig, group=True)
        deadline = time.monotonic() + timeout
        while not _exited(pid) and time.monotonic() < deadline:  # a zombie counts once its threads are gone
            time.sleep(POLL_INTERVAL)
        if _exited(pid):
            break
    else:
        raise StudioError(f"Label Studio (pid {pid}) survived SIGKILL for {timeout:.0f} s")
    pid_file.unlink(missing_ok=True)
    logger.info("Label Studio (pid %d) stopped", pid)
    return True


# --- command line --------------------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


def _out(line: str, stream: IO[str] | None = None) -> None:
    (stream or sys.stdout).write(line + "\n")


def _cmd_template(args: argparse.Namespace) -> int:
    started = time.monotonic()
    path = ensure_template(args.ls_venv, args.cache)
    _out(f"Label Studio template: {path} ({time.monotonic() - started:.1f} s)")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    pid_file, state_file = state_dir / PID_FILE_NAME, state_dir / STATE_FILE_NAME
    previous: dict[str, Any] = {}
    if state_file.exists():
        previous = json.loads(state_file.read_text(encoding="utf-8"))
    pid = _read_pid(pid_file)
    if pid is not None and is_label_studio_process(pid):
        _out(f"Label Studio is already running at {previous.get('url', '?')} (state in {state_file})")
        return 0
    template = ensure_template(args.ls_venv, args.cache)
    studio = LocalLabelStudio(args.ls_venv.resolve(), template, root=state_dir, port=args.port)
    if _is_data_dir(studio.data_dir):  # a restart: the user in the database has the recorded credentials
        if not previous:
            raise StudioError(
                f"{studio.data_dir} holds data but {state_file} is gone: remove {state_dir} to start afresh"
            )
        studio.username = previous["username"]
        studio.password = previous["password"]
        studio.legacy_token = previous["legacy_token"]
    studio.start(detach=True, pid_file=pid_file)
    _write_private(state_file, json.dumps(studio.state(), indent=2) + "\n")
    _out(f"Label Studio is running at {studio.url} (pid {studio.pid}, log {studio.log_path})")
    _out(f"log in as {studio.username} / {studio.password}; API token and details in {state_file}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    pid_file = args.state_dir / PID_FILE_NAME
    stopped = stop_pid_file(pid_file)
    _out("Label Studio stopped" if stopped else f"no Label Studio to stop ({pid_file})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ml_backend.studio``: build the template, or start/stop a background Label Studio.

    The only place here that reads the environment (``LABELLOOP_CACHE``, ``HOME``). A :class:`StudioError`
    ends the command with a one-line-plus-log message on stderr and exit code 2.
    """
    default_cache = Path(os.environ.get("LABELLOOP_CACHE") or Path.home() / ".cache" / "labelloop")
    parser = argparse.ArgumentParser(prog="python -m ml_backend.studio", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    template = commands.add_parser("template", help="build (once) the migrated template data dir; print its path")
    start = commands.add_parser("start", help="start a background Label Studio (state in --state-dir)")
    stop = commands.add_parser("stop", help="stop the background Label Studio of --state-dir")
    for sub in (template, start):
        sub.add_argument("--ls-venv", type=Path, required=True, help="venv with label-studio installed")
        sub.add_argument("--cache", type=Path, default=default_cache, help=f"template cache (default {default_cache})")
    for sub in (start, stop):
        sub.add_argument(
            "--state-dir",
            type=Path,
            default=Path(".labelloop") / "label-studio",
            help="data, files, log, pid and credentials of the background server (default .labelloop/label-studio)",
        )
    start.add_argument("--port", type=int, default=None, help="port to serve on (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"template": _cmd_template, "start": _cmd_start, "stop": _cmd_stop}
    try:
        return handlers[args.command](args)
    except StudioError as exc:
        _out(f"studio: error: {exc}", sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
