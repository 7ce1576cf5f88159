"""Helpers for the retraining-loop tests: the colour task, ms-swift rows, a throwaway Redis, quick settings.

The colour task is what a 9.9 M-parameter random Qwen2-VL can learn from scratch on CPU in a few hundred steps:
"What colour is the square?" over generated 112x112 images with one filled square of one of four colours.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 210, 20),
}
QUESTION = "What colour is the square?"


@dataclass(frozen=True)
class ColourImage:
    path: Path
    colour: str


def colour_images(out_dir: Path, n: int, *, seed: int = 0, size: int = 112, distractors: int = 0) -> list[ColourImage]:
    """``n`` PNGs, each a white canvas with one square of a random colour, size and place (and ``distractors``
    grey discs behind it).

    Plain squares on white are near-duplicates to a perceptual hash: export them with ``near_dup_distance=-1``.
    Grey discs make every image distinct, but also make the task much harder for the tiny model (held-out
    accuracy after 150 steps then varies from 0.6 to 0.97 with the data order).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images = []
    for i in range(n):
        colour = rng.choice(sorted(COLOURS))
        side = rng.randint(size // 4, size * 2 // 3)
        x, y = rng.randint(0, size - side), rng.randint(0, size - side)
        image = Image.new("RGB", (size, size), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for _ in range(distractors):
            grey = rng.randint(90, 210)
            cx, cy, r = rng.randint(0, size), rng.randint(0, size), rng.randint(size // 10, size // 3)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(grey, grey, grey))
        draw.rectangle([x, y, x + side, y + side], fill=COLOURS[colour])
        path = out_dir / f"square-{seed}-{i:04d}.png"
        image.save(path)
        images.append(ColourImage(path, colour))
    return images


def swift_rows(images: list[ColourImage], labels: list[str] | None = None) -> list[dict[str, Any]]:
    """ms-swift JSONL rows asking the colour question (``labels`` overrides the true colours, e.g. shuffled)."""
    answers = labels if labels is not None else [im.colour for im in images]
    return [
        {
            "messages": [{"role": "user", "content": f"<image>{QUESTION}"}, {"role": "assistant", "content": answer}],
            "images": [str(im.path.resolve())],
        }
        for im, answer in zip(images, answers, strict=True)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def throwaway_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private ``redis-server`` on a free port (for "Redis down" tests); yields (url, process) and kills it."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server must be installed for the Redis-down tests"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def restart_redis(url: str) -> subprocess.Popen[bytes]:
    """Start a ``redis-server`` again on the port of ``url`` (after a throwaway one was killed)."""
    port = int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    binary = shutil.which("redis-server")
    assert binary
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(url)
    for _ in range(200):
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                return proc
        time.sleep(0.05)
    raise AssertionError(f"redis-server did not come back on port {port}")


QUICK_TRAINING: dict[str, Any] = {
    "max_steps": 3,
    "epochs": 1.0,
    "train_batch_size": 1,
    "grad_accum": 1,
    "max_pixels": 50176,
    "gradient_checkpointing": False,
    "torch_dtype": "float32",
    "device": "cpu",
}


# --- a whole loop: backend (in a thread, with the swap watcher) + `labelloop worker` (a subprocess) -------------

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"

COLOUR_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="colour" toName="image" question="What colour is the square?">
    <Choice value="red"/><Choice value="green"/><Choice value="blue"/><Choice value="yellow"/>
  </Choices>
  <Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices>
</View>"""


def settings_env(overrides: dict[str, Any]) -> dict[str, str]:
    """``LABELLOOP_*`` variables for ``overrides`` (lists comma-joined, booleans as true/false)."""
    env = {}
    for key, value in overrides.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | tuple):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        env[f"LABELLOOP_{key.upper()}"] = text
    return env


def colour_result(colour: str, verdict: str | None = "accept") -> list[dict[str, Any]]:
    """A Label Studio result for the colour config: the colour choice and the review verdict."""
    result = [{"from_name": "colour", "to_name": "image", "type": "choices", "value": {"choices": [colour]}}]
    if verdict is not None:
        result.append({"from_name": "review", "to_name": "image", "type": "choices", "value": {"choices": [verdict]}})
    return result


def wait_for(check: Any, what: str, *, timeout: float = 600.0, interval: float = 0.5, diagnose: Any = None) -> Any:
    """Poll ``check()`` until it returns something truthy; fail with ``what`` (and ``diagnose()``) on timeout.

    A liveness bound, not a performance assertion: the timeouts are generous.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{diagnose()}" if diagnose is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass
class LoopSystem:
    """The loop as deployed: a backend serving the tiny model, a `labelloop worker`, one Redis, one data dir."""

    settings: Any
    env: dict[str, str]
    root: Path
    backend_url: str = ""
    app: Any = None
    watcher: Any = None
    worker: subprocess.Popen[bytes] | None = None
    _server: Any = None
    _thread: Any = None
    _worker_logs: list[Path] = field(default_factory=list)

    @property
    def registry(self) -> Any:
        from ml_backend.registry import Registry

        return Registry(self.settings.data_dir)

    def start_backend(self) -> LoopSystem:
        import threading

        from werkzeug.serving import make_server

        from ml_backend.app import create_app
        from ml_backend.swaps import attach

        self.app = create_app(self.settings)
        self.watcher = attach(self.app)
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.backend_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def start_worker(self, **overrides: Any) -> subprocess.Popen[bytes]:
        """`labelloop worker` in its own session (so a test can SIGKILL its whole process group); ``overrides``
        change its settings (e.g. a different ``max_steps`` for a restarted worker)."""
        import os

        log_path = self.root / f"worker-{len(self._worker_logs)}.log"
        self._worker_logs.append(log_path)
        env = {**os.environ, **self.env, **settings_env(overrides)}
        with log_path.open("wb") as sink:
            self.worker = subprocess.Popen(
                [str(PYTHON), "-m", "ml_backend.cli", "worker"],
                cwd=self.root, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self.worker

    def worker_log(self, lines: int = 60) -> str:
        return "\n".join(
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) for path in self._worker_logs[-1:]
        )

    def worker_tree(self) -> list[int]:
        """The worker's pid and its descendants' (work horse, scheduler, `swift sft`), from /proc."""
        if self.worker is None:
            return []
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        tree, todo = [], [self.worker.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def kill_worker_tree(self, *, spare: set[int] | frozenset[int] = frozenset()) -> None:
        """SIGKILL the worker and every process it started (RQ's work horse runs in its own process group),
        except ``spare``: what a container kill or the OOM killer does."""
        import os
        import signal

        for pid in self.worker_tree():
            if pid not in spare:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.worker is not None:
            self.worker.wait(timeout=60)

    def kill_worker(self, sig: int = 9) -> None:
        import os

        if self.worker is not None and self.worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, sig)
            self.worker.wait(timeout=60)

    def stop(self) -> None:
        import signal

        if self.worker is not None and self.worker.poll() is None:
            self.kill_worker(signal.SIGTERM)
        if self.watcher is not None:
            self.watcher.stop()
        if self._server is not None:
            self._server.shutdown()
        if self.app is not None:
            services = self.app.extensions["labelloop"]
            services.predictor.close()
            services.holder.close()

    def run_of(self, project: int, index: int = 0) -> Any:
        runs = self.registry.list_runs(project)
        return runs[-1 - index] if len(runs) > index else None


@dataclass
class ColourProject:
    """A Label Studio project of the colour task: its id, tasks by image URL and the true colours."""

    id: int
    tasks: dict[str, int]
    truth: dict[str, str]
    ml_id: int | None = None


def colour_project(
    ls_client: Any,
    files_root: Path,
    *,
    annotated: int,
    unannotated: int = 0,
    seed: int = 0,
    title: str = "colour",
    backend_url: str | None = None,
) -> ColourProject:
    """A colour project: ``annotated`` tasks imported with an accepted true-colour annotation (in bulk: Label
    Studio sends no annotation webhook for these) and ``unannotated`` more; images served by local-files storage.
    With ``backend_url`` the labelloop backend is connected (LS then sends every event to its /webhook).
    """
    project = ls_client.projects.create(title=title, label_config=COLOUR_CONFIG)
    pid = int(project.id)
    images = colour_images(files_root / f"colour-{pid}", annotated + unannotated, seed=seed)
    url = {im.path: "/data/local-files/?d=" + str(im.path.relative_to(files_root)) for im in images}
    ls_client.import_storage.local.create(
        project=pid, path=str(images[0].path.parent), regex_filter=r".*\.png", use_blob_urls=True
    )
    ml_id = int(ls_client.ml.create(project=pid, url=backend_url, title="labelloop").id) if backend_url else None
    bulk: list[dict[str, Any]] = [
        {"data": {"image": url[im.path]}, "annotations": [{"result": colour_result(im.colour)}]}
        for im in images[:annotated]
    ]
    bulk += [{"data": {"image": url[im.path]}} for im in images[annotated:]]
    ls_client.projects.import_tasks(id=pid, request=bulk)
    tasks = {str(t.data["image"]): int(t.id) for t in ls_client.tasks.list(project=pid, page_size=1000)}
    return ColourProject(pid, tasks, {url[im.path]: im.colour for im in images}, ml_id)
