"""`make demo`: Label Studio with labelloop's suggestions and retraining loop on generated images, in one command.

    python scripts/demo.py [--template caption] [--images 12]   # start (or reuse) everything, print what to try
    python scripts/demo.py --stop                                # stop what it started (make stop)

What it does, each step reusing what is already there (a second run starts in seconds):

1. Redis: reuses the one at ``LABELLOOP_REDIS_URL`` (default redis://127.0.0.1:6379/0), else starts
   ``redis-server`` on that port.
2. Label Studio on SQLite (``python -m ml_backend.studio start``): a copy of the cached migrated template data
   dir, an admin user with a legacy API token created non-interactively, local files served, local backends and
   webhooks allowed; port 8080 when free.
3. The model: the directory ``LABELLOOP_MODEL`` names when it is one (a real Qwen-VL), else the tiny random
   Qwen2-VL built offline in seconds.
4. ``labelloop serve`` (backend) and ``labelloop worker`` (RQ worker), detached, with the settings written to
   ``.labelloop/demo/demo.env`` (source it to run ``labelloop runs list`` and friends against the demo).
5. Sample images (shapes on textures, and app screenshots with red rectangles drawn on them) into Label Studio's
   local-files root, with a reference caption each in ``captions.json``.
6. ``labelloop setup`` (in-process): the project, backend, webhook and local-files storage; then Label Studio
   asks the backend for a suggestion for every task.

Everything lives in ``.labelloop/demo/``: PID files (``*.pid``, what ``--stop`` stops, by PID, after checking
the command line is still ours), logs (``logs/``), Label Studio's state, the data dir. The demo's loop settings
make a retrain quick to see: 4 reviews trigger it, no cool-down, a few training steps, and the evaluation gate
promotes any candidate (``LABELLOOP_PROMOTE_MARGIN=1``) so the version visibly changes.

Failures end the script with ``demo: error: ...`` (exit code 2) and, for a process that did not come up, the
tail of its log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python scripts/demo.py` puts scripts/ first, not the repo
    sys.path.insert(0, str(REPO))

from ml_backend import studio  # noqa: E402

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEMO_TITLE = "labelloop demo"
MODEL_NAME = "tiny"  # model_version strings read "tiny@base", then "tiny@p1-v1" after the first retrain
LS_PORT, BACKEND_PORT = 8080, 9090
STOP_TIMEOUT = 15.0
POLL = 0.2
# How each process we start is recognised in /proc/<pid>/cmdline before it is signalled (PIDs get reused).
MARKERS = {"backend": "serve", "worker": "worker", "redis": "redis-server"}
# The demo's loop: quick to trigger, quick to train, and a gate that always promotes (the tiny model's
# candidates are not better than its random base, and the point is to see the version change).
DEMO_LOOP = {
    "LABELLOOP_MIN_NEW_REVIEWS": "4",
    "LABELLOOP_COOLDOWN_SECONDS": "0",
    "LABELLOOP_MAX_STEPS": "8",
    "LABELLOOP_LORA_RANK": "8",
    "LABELLOOP_LORA_ALPHA": "16",
    "LABELLOOP_PROMOTE_MARGIN": "1.0",
    "LABELLOOP_VAL_FRACTION": "0.25",  # 4 reviews: 3 to train on, 1 held out for the gate's evaluation
    "LABELLOOP_BATCH_SIZE": "4",
    "LABELLOOP_THREADS": "4",
}
# Small inputs and answers: quick suggestions and training from the tiny model on 2 cores (not for a real model).
TINY_MODEL = {
    "LABELLOOP_MODEL_NAME": MODEL_NAME,
    "LABELLOOP_MAX_PIXELS": "50176",
    "LABELLOOP_IMAGE_MAX_PIXELS": "50176",
    "LABELLOOP_MAX_NEW_TOKENS": "24",
}
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps its state (``.labelloop/demo`` by default)."""

    root: Path

    @property
    def studio(self) -> Path:
        return self.root / "label-studio"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def model(self) -> Path:
        return self.root / "tiny-model"

    @property
    def env_file(self) -> Path:
        return self.root / "demo.env"

    @property
    def secret_file(self) -> Path:
        return self.root / "webhook-secret"

    @property
    def instance(self) -> str:
        """A random id made with the directory (``instance`` file), naming its Redis keys and queue."""
        path = self.root / "instance"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(4) + "\n", encoding="utf-8")
        return path.read_text(encoding="utf-8").strip()

    def pid_file(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


# --- processes ---------------------------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running_pid(paths: DemoPaths, name: str) -> int | None:
    """The PID in ``<name>.pid`` when that process is alive and still ours (its command line matches)."""
    try:
        pid = int(paths.pid_file(name).read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if MARKERS[name] in _cmdline(pid) else None


def start_process(paths: DemoPaths, name: str, argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, bool]:
    """Start ``argv`` detached (own session, output to ``logs/<name>.log``), unless ours already runs.

    Returns (pid, started): ``started`` is False when a running one was reused.
    """
    pid = running_pid(paths, name)
    if pid is not None:
        return pid, False
    paths.logs.mkdir(parents=True, exist_ok=True)
    with paths.log(name).open("ab") as log:
        log.write(f"--- demo: starting {' '.join(argv)} ---\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    paths.pid_file(name).write_text(f"{proc.pid}\n", encoding="utf-8")
    # until the child has exec'd, /proc shows our command line: wait, so the PID file is recognisably its own
    wait_until(name, lambda: MARKERS[name] in _cmdline(proc.pid) or proc.poll() is not None, timeout=10)
    return proc.pid, True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has exited
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def stop_process(paths: DemoPaths, name: str, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the process group of ``<name>.pid`` (then SIGKILL after ``timeout``); False when none ran."""
    pid = running_pid(paths, name)
    paths_pid = paths.pid_file(name)
    if pid is None:
        paths_pid.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    paths_pid.unlink(missing_ok=True)
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_until(what: str, check: Any, *, timeout: float, log: Path | None = None, pid: int | None = None) -> None:
    """Poll ``check()`` until true; fail with the log's tail when ``pid`` dies or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if pid is not None and not _alive(pid):
            raise DemoError(f"{what}: the process exited; last lines of {log}:\n{_tail(log) if log else ''}")
        if time.monotonic() > deadline:
            raise DemoError(
                f"{what}: not ready after {timeout:.0f} s; last lines of {log}:\n{_tail(log) if log else ''}"
            )
        time.sleep(POLL)


# --- Redis ----------------------------------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_redis(paths: DemoPaths, url: str) -> str:
    """Reuse the Redis at ``url`` or start ``redis-server`` there; returns what was done."""
    if redis_answers(url):
        return "reused" if running_pid(paths, "redis") is None else "reused (ours)"
    parts = urlsplit(url)
    exe = shutil.which("redis-server")
    if exe is None:
        raise DemoError(f"no Redis answers at {url} and redis-server is not installed (apt-get install redis-server)")
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    argv = [exe, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"]
    pid, _ = start_process(paths, "redis", argv, os.environ)
    wait_until("Redis", lambda: redis_answers(url), timeout=30, log=paths.log("redis"), pid=pid)
    return f"started (pid {pid})"


# --- Label Studio --------------------------------------------------------------------------------------------------


def ensure_label_studio(paths: DemoPaths, ls_venv: Path) -> dict[str, Any]:
    """Start (or reuse) the demo's Label Studio; returns its state: url, username, password, legacy_token, ..."""
    state_file = paths.studio / studio.STATE_FILE_NAME
    argv = ["start", "--ls-venv", str(ls_venv), "--state-dir", str(paths.studio)]
    running = (paths.studio / studio.PID_FILE_NAME).exists()
    if not running and studio.port_is_free(LS_PORT):
        argv += ["--port", str(LS_PORT)]
    if studio.main(argv) != 0:
        raise DemoError("Label Studio did not start (see above)")
    state: dict[str, Any] = json.loads(state_file.read_text(encoding="utf-8"))
    return state


# --- model, settings, images --------------------------------------------------------------------------------------


def ensure_model(paths: DemoPaths, requested: str | None) -> tuple[str, str | None]:
    """(model directory, model_name) — ``LABELLOOP_MODEL`` when it is a directory, else the tiny model."""
    if requested and Path(requested).is_dir():
        return str(Path(requested).resolve()), None
    if requested:
        raise DemoError(
            f"LABELLOOP_MODEL={requested!r} is not a directory: the demo runs offline (unset it for the tiny model)"
        )
    if not (paths.model / "labelloop_tiny.json").exists():
        from ml_backend.tiny_model import build_tiny_model

        build_tiny_model(paths.model, "qwen2_vl")
    return str(paths.model), MODEL_NAME


def demo_env(
    paths: DemoPaths,
    *,
    ls: Mapping[str, Any],
    redis_url: str,
    model: str,
    model_name: str | None,
    backend_port: int,
    secret: str,
) -> dict[str, str]:
    """The ``LABELLOOP_*`` settings of the demo's backend, worker and setup."""
    env = {
        "LABELLOOP_DATA_DIR": str(paths.data),
        "LABELLOOP_REDIS_URL": redis_url,
        # Namespaced per demo directory: a new one (its Label Studio numbers projects and annotations from 1
        # again) must not meet review counts a previous one left in the same Redis.
        "LABELLOOP_REDIS_PREFIX": f"labelloop-demo-{paths.instance}",
        "LABELLOOP_QUEUE_NAME": f"labelloop-demo-{paths.instance}",
        "LABELLOOP_LS_URL": ls["url"],
        "LABELLOOP_LS_API_KEY": ls["legacy_token"],
        "LABELLOOP_LS_LOCAL_FILES_ROOT": ls["files_root"],
        "LABELLOOP_LS_MEDIA_DIR": str(Path(ls["data_dir"]) / "media"),
        "LABELLOOP_MODEL": model,
        "LABELLOOP_HOST": "127.0.0.1",
        "LABELLOOP_PORT": str(backend_port),
        "LABELLOOP_BACKEND_URL": f"http://127.0.0.1:{backend_port}",
        "LABELLOOP_WEBHOOK_SECRET": secret,
        **DEMO_LOOP,
    }
    if model_name:
        env.update(TINY_MODEL, LABELLOOP_MODEL_NAME=model_name)
    return env


def process_env(settings_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a demo process: ours without other ``LABELLOOP_*`` values, offline, plus the demo's."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_") or k == "LABELLOOP_CACHE"}
    return {**base, **OFFLINE, **settings_env}


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """``KEY=value`` lines (0600: it holds the API key and the webhook secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(f"{key}={value}\n" for key, value in sorted(env.items()))


def webhook_secret(paths: DemoPaths) -> str:
    """The demo's webhook secret, made once."""
    if paths.secret_file.exists():
        return paths.secret_file.read_text(encoding="utf-8").strip()
    secret = secrets.token_hex(16)
    write_env_file(paths.secret_file, {})
    paths.secret_file.write_text(secret + "\n", encoding="utf-8")
    return secret


def _pick_port(preferred: int) -> int:
    return preferred if studio.port_is_free(preferred) else studio.free_port()


def sample_images(directory: Path, count: int, *, seed: int = 0) -> dict[str, str]:
    """Write ``count`` images (every other one a screenshot with a drawn red mark) and their reference captions.

    Idempotent: existing files are kept. Returns file name -> caption (also written to ``captions.json``).
    """
    import numpy as np

    from converters.samples import draw_screenshot, draw_shapes

    directory.mkdir(parents=True, exist_ok=True)
    captions: dict[str, str] = {}
    for index in range(count):
        rng = np.random.default_rng(seed + index)
        if index % 2:
            image, _, _, what = draw_screenshot(480, 320, rng)
            name, caption = f"screenshot-{index:02d}.png", f"A settings screen; a red rectangle marks {what}."
        else:
            image, shapes = draw_shapes(320, 240, rng, count=2)
            name = f"shapes-{index:02d}.png"
            caption = "A " + " and a ".join(f"{s.colour} {s.kind}" for s in shapes) + " on a soft background."
        if not (directory / name).exists():
            image.save(directory / name)
        captions[name] = caption
    (directory / "captions.json").write_text(json.dumps(captions, indent=2) + "\n", encoding="utf-8")
    return captions


def wait_for_backend(url: str, pid: int, log: Path, timeout: float = 120.0) -> None:
    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(f"the backend at {url}", up, timeout=timeout, log=log, pid=pid)


def wait_for_worker(redis_url: str, queue: str, pid: int, log: Path, timeout: float = 120.0) -> None:
    import redis
    from rq import Queue, Worker

    connection = redis.Redis.from_url(redis_url)

    def registered() -> bool:
        return any(w.pid == pid for w in Worker.all(connection=connection, queue=Queue(queue, connection=connection)))

    wait_until("the worker", registered, timeout=timeout, log=log, pid=pid)


def request_predictions(ls_url: str, api_key: str, project: int) -> int:
    """Ask Label Studio to get a suggestion for every task without one of the current version; returns how many
    tasks have a suggestion afterwards (read back: the action answers 200 even when the backend failed)."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=ls_url, api_key=api_key, timeout=600)
    client.actions.create(
        id="retrieve_tasks_predictions", project=project, selected_items={"all": True, "excluded": []}
    )
    return len({p.task for p in client.predictions.list(project=project)})


# --- the two commands ----------------------------------------------------------------------------------------------


class Steps:
    """Prints each step with its duration and keeps the durations."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._started = time.monotonic()

    def done(self, name: str) -> None:
        self.timings[name] = time.monotonic() - self._started
        say(f"{name} ({self.timings[name]:.1f} s)")
        self._started = time.monotonic()


def start(paths: DemoPaths, *, template: str, count: int, ls_venv: Path) -> dict[str, Any]:
    """Run every step (see the module docstring); returns what to print."""
    paths.root.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    redis_url = os.environ.get("LABELLOOP_REDIS_URL") or DEFAULT_REDIS
    steps.done(f"Redis {ensure_redis(paths, redis_url)} at {redis_url}")
    ls = ensure_label_studio(paths, ls_venv)
    steps.done(f"Label Studio at {ls['url']}")
    model, model_name = ensure_model(paths, os.environ.get("LABELLOOP_MODEL"))
    steps.done(f"model {model}")
    return run_loop(
        paths,
        ls=ls,
        redis_url=redis_url,
        model=model,
        model_name=model_name,
        template=template,
        count=count,
        steps=steps,
    )


def run_loop(
    paths: DemoPaths,
    *,
    ls: Mapping[str, Any],
    redis_url: str,
    model: str,
    model_name: str | None,
    template: str,
    count: int,
    steps: Steps | None = None,
) -> dict[str, Any]:
    """Backend, worker, sample images, setup and first suggestions on a running Label Studio and Redis.

    ``ls`` is Label Studio's state (``url``, ``legacy_token``, ``files_root``, ``data_dir``). Returns ``ls``, the
    setup ``report``, the settings ``env`` and the step ``timings``.
    """
    from ml_backend.cli.setup import run_setup
    from ml_backend.settings import load_settings

    steps = steps or Steps()
    paths.root.mkdir(parents=True, exist_ok=True)
    backend_port = _pick_port(BACKEND_PORT)
    if running_pid(paths, "backend") is not None and paths.env_file.exists():  # keep the running backend's port
        previous = dict(line.split("=", 1) for line in paths.env_file.read_text(encoding="utf-8").splitlines())
        backend_port = int(previous["LABELLOOP_PORT"])
    settings_env = demo_env(
        paths,
        ls=ls,
        redis_url=redis_url,
        model=model,
        model_name=model_name,
        backend_port=backend_port,
        secret=webhook_secret(paths),
    )
    write_env_file(paths.env_file, settings_env)
    env = process_env(settings_env)
    labelloop = str(Path(sys.executable).parent / "labelloop")
    backend_url = settings_env["LABELLOOP_BACKEND_URL"]
    backend_pid, started = start_process(paths, "backend", [labelloop, "serve"], env)
    wait_for_backend(backend_url, backend_pid, paths.log("backend"))
    steps.done(f"backend {'started' if started else 'running'} at {backend_url} (pid {backend_pid})")
    worker_pid, started = start_process(paths, "worker", [labelloop, "worker"], env)
    wait_for_worker(redis_url, settings_env["LABELLOOP_QUEUE_NAME"], worker_pid, paths.log("worker"))
    steps.done(f"worker {'started' if started else 'running'} (pid {worker_pid})")

    images = Path(ls["files_root"]) / "demo-images"
    sample_images(images, count)
    steps.done(f"{count} sample images in {images}")
    with _environment(settings_env):
        settings = load_settings(_env_file=None)
    report = run_setup(settings, template, DEMO_TITLE, images=images)
    for line in report.lines():
        say(f"  setup: {line}")
    steps.done("labelloop setup")
    predicted = request_predictions(ls["url"], ls["legacy_token"], report.project_id)
    steps.done(f"suggestions for {predicted} tasks")
    return {"ls": ls, "report": report, "env": settings_env, "timings": steps.timings}


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Any:
    """Temporarily replace this process's ``LABELLOOP_*`` variables by ``values`` (Settings read them)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("LABELLOOP_") and k != "LABELLOOP_CACHE"}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)


def stop(paths: DemoPaths) -> list[str]:
    """Stop what the demo started (worker, backend, Label Studio, Redis if it started it); returns their names."""
    stopped = [name for name in ("worker", "backend") if stop_process(paths, name)]
    if studio.stop_pid_file(paths.studio / studio.PID_FILE_NAME):
        stopped.append("Label Studio")
    if stop_process(paths, "redis"):
        stopped.append("redis")
    return stopped


def print_summary(result: Mapping[str, Any], paths: DemoPaths) -> None:
    ls, report, env = result["ls"], result["report"], result["env"]
    reviews = env["LABELLOOP_MIN_NEW_REVIEWS"]
    print(
        f"""
Label Studio is ready: {report.project_url}
  log in as  {ls["username"]}  /  {ls["password"]}

Try this:
  1. Open a task: the suggestion tab above the image shows labelloop's model version (e.g. {MODEL_NAME}@base) and
     its score; the suggestion is pre-filled (the tiny model is random: expect gibberish until it is retrained).
  2. Write or correct the caption, choose "accept" under Review, Submit. Reference captions for the sample
     images are in {Path(ls["files_root"]) / "demo-images" / "captions.json"}.
  3. After {reviews} reviewed tasks the worker retrains (logs: {paths.log("worker")}; or
     `set -a; . {paths.env_file}; set +a; labelloop runs list`). When the new version is promoted the backend
     swaps it in without a restart: tasks opened next show the new version (e.g. {MODEL_NAME}@p{report.project_id}-v1);
     for tasks that already have a suggestion use Actions > Retrieve Predictions in the data manager.
  4. `make stop` stops everything the demo started; `make demo` again restarts it in seconds.
""",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--stop", action="store_true", help="stop what the demo started (by PID files)")
    parser.add_argument("--template", default="caption", help="label_configs template (default caption)")
    parser.add_argument("--images", type=int, default=12, help="sample images to generate (default 12)")
    parser.add_argument("--dir", type=Path, default=REPO / ".labelloop" / "demo", help="demo state directory")
    parser.add_argument("--ls-venv", type=Path, default=REPO / ".ls-venv", help="Label Studio's venv")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call is noise here
    paths = DemoPaths(args.dir.resolve())
    if args.stop:
        stopped = stop(paths)
        say("stopped " + ", ".join(stopped) if stopped else "nothing was running")
        return 0
    started = time.monotonic()
    try:
        result = start(paths, template=args.template, count=args.images, ls_venv=args.ls_venv)
    except (DemoError, studio.StudioError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr, flush=True)
        return 2
    print_summary(result, paths)
    say(f"ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
