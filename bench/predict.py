"""Benchmark of the ML backend: HTTP overhead against label-studio-ml 1.0.9, its share of a real prediction,
batched bulk pre-annotation, and the prediction cache — each figure with its same-run comparison.

(a) ``/predict`` throughput with a **no-op model** on both servers, served alike (gunicorn, 1 worker, 8 threads):
    labelloop (``create_app`` with a no-op engine; basic auth on, validation, Redis cache lookups and writes,
    images read and decoded from the mounted media dir, metrics) against label-studio-ml 1.0.9's ``init_app``
    with a no-op ``LabelStudioMLBase`` (its own venv, ``scripts/venv.sh lsml requirements/lsml.lock``; its
    ``/setup`` called first). 8 concurrent clients, 1 and 100 tasks per request, every task new (no cache hit).
    Target: labelloop's tasks/s >= label-studio-ml's. Five rounds, each measuring every server one after the
    other; the verdict is on the median of the rounds' ratios (servers measured seconds apart), which a shared
    machine's other work moves far less than a best-of figure (measured here: a best-of-2 ratio swung from
    0.66x to 1.16x between two runs of the same code).
(a') the same labelloop server with the **tiny Qwen2-VL** (``labelloop serve``, transformers on CPU): the
    backend's own share of ``/predict`` time, i.e. 1 - engine seconds / request seconds from its ``/metrics``.
    Target <= 5 %.
(b) **bulk pre-annotation** of 64 tasks of a real Label Studio (started from the cached template) with the
    tiny model: ``run_bulk`` batched (chunks of 64, engine batches of 16, one predictions import) against one
    task at a time (chunks of 1: one generation and one import per task). Target: >= 3x.
(c) a **cached repeat** of a 100-task ``/predict`` against the first, on the tiny-model server. Target <= 1 %.

Run: ``.venv/bin/python bench/predict.py`` (``--only a,b,c`` to select; ``--quick`` for fewer requests).
Needs Redis at ``LABELLOOP_TEST_REDIS_URL`` (default redis://127.0.0.1:6379; a database of its own, flushed),
``.ls-venv`` for (b) and the lsml venv for (a) (built on first use).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from ml_backend.engines.base import AdapterRef, Generation, GenerationRequest  # noqa: E402
from ml_backend.settings import Settings  # noqa: E402

CACHE = Path(os.environ.get("LABELLOOP_CACHE", Path.home() / ".cache" / "labelloop"))
REDIS = os.environ.get("LABELLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379")
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image"/>
</View>"""
AUTH = ("bench", "bench-password")
LSML = "label-studio-ml 1.0.9, model ignores images"
LSML_READS = "label-studio-ml 1.0.9, model reads its image"
ROUNDS = 5
IMAGES = 100
CLIENTS = 8

LSML_MODEL = """
import os

from label_studio_ml.model import LabelStudioMLBase
from PIL import Image

MEDIA = os.environ.get("BENCH_MEDIA_DIR", "")
READ_IMAGES = os.environ.get("BENCH_READ_IMAGES") == "1"


class NoopModel(LabelStudioMLBase):
    def predict(self, tasks, **kwargs):
        if READ_IMAGES:  # what any label-studio-ml model does before its inference: the image, as RGB
            for task in tasks:
                Image.open(self.get_local_path(task["data"]["image"], project_dir=MEDIA)).convert("RGB")
        return [{"result": [], "score": 0.0} for _ in tasks]
"""
LSML_WSGI = """
import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from label_studio_ml.api import init_app
from noop_model import NoopModel
app = init_app(model_class=NoopModel, model_dir=os.path.join(os.path.dirname(__file__), "models"))
"""


class NoopEngine:
    """An engine that answers nothing at once (the same no-op model as label-studio-ml's)."""

    family: Any = "qwen2_vl"
    base_name = "noop"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [Generation("", input_size=request.image.size) for request in requests]

    def score_options(self, request: GenerationRequest, options: Sequence[str]) -> list[float]:
        return [0.0] * len(options)

    def load_adapter(self, adapter: AdapterRef) -> None:
        pass

    def unload_adapter(self, adapter: AdapterRef) -> None:
        pass

    def close(self) -> None:
        pass


# --- plumbing ----------------------------------------------------------------------------------------------


def machine() -> str:
    from importlib.metadata import version

    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    packages = ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "flask", "gunicorn", "redis"))
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, {packages}"


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_db() -> str:
    """A Redis database of its own (15 down to 1, the first empty one), flushed."""
    import redis

    for db in range(15, 0, -1):
        client = redis.Redis.from_url(REDIS, db=db)
        if client.dbsize() == 0 and client.set("labelloop-bench:claim", os.getpid(), nx=True, ex=3600):
            return f"{REDIS.rstrip('/')}/{db}"
    raise SystemExit("bench: no empty Redis database")


def start(command: list[str], url: str, log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise SystemExit(f"bench: {command[0]} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {command[0]} did not answer:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def make_images(root: Path, count: int = IMAGES) -> None:
    upload = root / "upload" / "1"
    upload.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (64 + i % 7, 48), ((37 * i) % 256, (91 * i) % 256, 160)).save(upload / f"img{i}.png")


def predict_body(first_id: int, count: int) -> dict[str, Any]:
    tasks = [{"id": first_id + i, "data": {"image": f"/data/upload/1/img{(first_id + i) % IMAGES}.png"}}
             for i in range(count)]  # fmt: skip
    return {"tasks": tasks, "project": "1.1795311193", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None}}  # fmt: skip


def hammer(url: str, tasks_per_request: int, requests_per_client: int, first_id: int) -> tuple[float, int]:
    """8 clients, each sending its requests back to back; returns (seconds, tasks answered)."""
    errors: list[str] = []
    answered = [0] * CLIENTS

    def client(index: int) -> None:
        with httpx.Client(base_url=url, auth=AUTH, timeout=120) as http:
            for n in range(requests_per_client):
                start_id = first_id + (index * requests_per_client + n) * tasks_per_request
                response = http.post("/predict", json=predict_body(start_id, tasks_per_request))
                if response.status_code != 200 or len(response.json()["results"]) != tasks_per_request:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                answered[index] += tasks_per_request

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"bench: {url} failed: {errors[0]}")
    return seconds, sum(answered)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far (gunicorn: master + worker)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for proc in [pid, *map(int, children)]:
        fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


# --- (a) against label-studio-ml 1.0.9 -----------------------------------------------------------------------


def serve_noop(port: int, media: Path, redis_url: str) -> None:
    """Entry of the no-op labelloop server process (gunicorn, as ``labelloop serve`` runs)."""
    from ml_backend.app import create_app
    from ml_backend.cli.serve import run_gunicorn

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        port=port,
        threads=int(os.environ.get("BENCH_THREADS", "8")),
        model_name="noop",
        ls_media_dir=media,
        redis_url=redis_url,
        cache_ttl=int(os.environ.get("BENCH_CACHE_TTL", "600")),
        redis_prefix=f"bench-{os.getpid()}",
        basic_auth_user=AUTH[0],
        basic_auth_password=AUTH[1],
        log_level="WARNING",
        access_log=False,  # label-studio-ml's gunicorn runs without one too
    )
    run_gunicorn(settings, lambda: create_app(settings, engine_factory=lambda s: NoopEngine()))


def lsml_venv() -> Path:
    result = subprocess.run(["scripts/venv.sh", "lsml", "requirements/lsml.lock"], cwd=REPO, capture_output=True,
                            text=True, check=True)  # fmt: skip
    return Path(result.stdout.strip())


def part_a(work: Path, redis_url: str, quick: bool) -> dict[str, float]:
    media = work / "media"
    make_images(media)
    app_dir = work / "lsml"
    app_dir.mkdir()
    (app_dir / "noop_model.py").write_text(LSML_MODEL)
    (app_dir / "wsgi.py").write_text(LSML_WSGI)
    venv = lsml_venv()
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    for name, read in ((LSML, "0"), (LSML_READS, "1")):
        port = free_port()
        env = {**os.environ, "BENCH_MEDIA_DIR": str(media), "BENCH_READ_IMAGES": read}
        servers[name] = (f"http://127.0.0.1:{port}", start(
            [str(venv / "bin" / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "8",
             "--worker-class", "gthread", "--log-level", "warning", "wsgi:app"],
            f"http://127.0.0.1:{port}", work / f"lsml-{read}.log", env=env, cwd=app_dir))  # fmt: skip
    port = free_port()
    servers["labelloop"] = (f"http://127.0.0.1:{port}", start(
        [sys.executable, __file__, "--serve-noop", str(port), str(media), redis_url],
        f"http://127.0.0.1:{port}", work / "labelloop-noop.log"))  # fmt: skip
    results: dict[str, float] = {}
    try:
        for url, _ in servers.values():
            setup = {"project": "1.1795311193", "schema": CONFIG, "hostname": "http://localhost:8080",
                     "access_token": "0" * 40}  # fmt: skip
            httpx.post(f"{url}/setup", json=setup, auth=AUTH, timeout=10).raise_for_status()
            hammer(url, 1, 5, 900_000_000)  # warm up
        print("(a) /predict with a no-op model, 8 concurrent clients, every task new; "
              f"{ROUNDS} rounds, the servers one after the other in each; server CPU from /proc")  # fmt: skip
        print(f"    {'server':<44}{'tasks/req':>10}{'req/s':>9}{'tasks/s':>9}{'CPU us/task':>13}"
              "   (medians of the rounds)")  # fmt: skip
        first_id = 1
        for tasks_per_request, per_client in ((1, 40 if quick else 150), (100, 2 if quick else 6)):
            rounds: list[dict[str, tuple[float, float]]] = []
            for _ in range(ROUNDS):
                measured: dict[str, tuple[float, float]] = {}
                for name, (url, process) in servers.items():
                    before = process_cpu(process.pid)
                    seconds, tasks = hammer(url, tasks_per_request, per_client, first_id)
                    measured[name] = (tasks / seconds, (process_cpu(process.pid) - before) / tasks)
                    first_id += tasks
                rounds.append(measured)
            for name in servers:
                rate = _median([measured[name][0] for measured in rounds])
                cpu = _median([measured[name][1] for measured in rounds])
                results[f"{name}/{tasks_per_request}"] = rate
                print(f"    {name:<44}{tasks_per_request:>10}{rate / tasks_per_request:>9.1f}{rate:>9.0f}"
                      f"{cpu * 1e6:>13.0f}")  # fmt: skip
            # Each round's ratio compares servers measured a few seconds apart: less exposed to the machine's other
            # work than a ratio of figures taken minutes apart. The verdict is on their median.
            for reference, key in ((LSML_READS, "ratio"), (LSML, "bare")):
                ratios = sorted(measured["labelloop"][0] / measured[reference][0] for measured in rounds)
                results[f"{key}/{tasks_per_request}"] = _median(ratios)
                results[f"{key}/{tasks_per_request}/range"] = ratios[-1] - ratios[0]
                results[f"{key}/{tasks_per_request}/min"] = ratios[0]
                results[f"{key}/{tasks_per_request}/max"] = ratios[-1]
        for tasks_per_request in (1, 100):
            equal = results[f"ratio/{tasks_per_request}"]
            bare = results[f"bare/{tasks_per_request}"]
            low, high = results[f"ratio/{tasks_per_request}/min"], results[f"ratio/{tasks_per_request}/max"]
            print(f"    {tasks_per_request:>3} task(s)/request: labelloop / label-studio-ml reading its images "
                  f"{equal:.2f}x, median of the rounds' ratios (rounds {low:.2f}-{high:.2f}; target >= 1: "
                  f"{'PASS' if equal >= 1 else 'FAIL'}); / label-studio-ml ignoring them {bare:.2f}x")  # fmt: skip
    finally:
        for _, process in servers.values():
            stop(process)
    return results


# --- (a') and (c) with the tiny model ------------------------------------------------------------------------


def tiny_model_dir() -> Path:
    """The tiny Qwen2-VL, built once and shared with the tests (same cache path and key as tests/conftest.py)."""
    import hashlib

    import transformers

    from ml_backend.tiny_model import build_tiny_model

    source = (REPO / "ml_backend" / "tiny_model.py").read_bytes() + transformers.__version__.encode()
    path = CACHE / "tiny-models" / f"qwen2_vl-{hashlib.sha256(source).hexdigest()[:12]}"
    if not (path / "labelloop_tiny.json").exists():
        build_tiny_model(path, "qwen2_vl")
    return path


def part_a2_c(work: Path, redis_url: str, quick: bool) -> dict[str, float]:
    media = work / "media"
    make_images(media)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("LABELLOOP_")}
    env.update({
        "LABELLOOP_MODEL": str(tiny_model_dir()), "LABELLOOP_MODEL_NAME": "tiny", "LABELLOOP_PORT": str(port),
        "LABELLOOP_REDIS_URL": redis_url, "LABELLOOP_REDIS_PREFIX": f"bench-tiny-{os.getpid()}",
        "LABELLOOP_LS_MEDIA_DIR": str(media), "LABELLOOP_MAX_NEW_TOKENS": "32", "LABELLOOP_BATCH_SIZE": "16",
        "LABELLOOP_BASIC_AUTH_USER": AUTH[0], "LABELLOOP_BASIC_AUTH_PASSWORD": AUTH[1],
        "LABELLOOP_LOG_LEVEL": "WARNING", "LABELLOOP_ACCESS_LOG": "false", "LABELLOOP_DATA_DIR": str(work / "data"),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })  # fmt: skip
    process = start([sys.executable, "-m", "ml_backend.cli", "serve"], url, work / "labelloop-tiny.log", env=env)
    results: dict[str, float] = {}
    try:
        with httpx.Client(base_url=url, auth=AUTH, timeout=600) as http:
            http.post("/predict", json=predict_body(800_000_000, 2)).raise_for_status()  # loads the model
            before = http.get("/metrics").text
            next_id = 1
            sizes = [1] * (4 if quick else 10) + [100] * (1 if quick else 2)
            client_seconds = 0.0
            for size in sizes:
                started = time.perf_counter()
                http.post("/predict", json=predict_body(next_id, size)).raise_for_status()
                client_seconds += time.perf_counter() - started
                next_id += size
            after = http.get("/metrics").text
            request_s = metric(after, "labelloop_http_request_seconds_sum", 'endpoint="predict.predict"') - metric(
                before, "labelloop_http_request_seconds_sum", 'endpoint="predict.predict"')  # fmt: skip
            engine_s = sum(metric(after, "labelloop_engine_seconds_sum", f'op="{op}"')
                           - metric(before, "labelloop_engine_seconds_sum", f'op="{op}"')
                           for op in ("generate", "score_options"))  # fmt: skip
            share = 1 - engine_s / request_s
            results["share"] = share
            print(
                f"(a') tiny Qwen2-VL on CPU, {len(sizes)} /predict requests ({sum(sizes)} tasks, 32 new tokens each):"
            )
            print(f"    request time {request_s:.2f} s (client-side {client_seconds:.2f} s), engine {engine_s:.2f} s")
            print(f"    backend's own share {share * 100:.2f} % (target <= 5 %: {'PASS' if share <= 0.05 else 'FAIL'})")

            body = predict_body(700_000_000, 100)
            started = time.perf_counter()
            http.post("/predict", json=body).raise_for_status()
            first = time.perf_counter() - started
            repeats = []
            for _ in range(5):
                started = time.perf_counter()
                answer = http.post("/predict", json=body)
                repeats.append(time.perf_counter() - started)
                answer.raise_for_status()
            repeat = min(repeats)
            ratio = repeat / first
            results["cache_ratio"] = ratio
            verdict = "PASS" if ratio <= 0.01 else "FAIL"
            print(f"(c) 100 tasks: first /predict {first:.2f} s, cached repeat {repeat * 1000:.1f} ms "
                  f"(best of 5) = {ratio * 100:.2f} % (target <= 1 %: {verdict})")  # fmt: skip
    finally:
        stop(process)
    return results


# --- (b) bulk pre-annotation against a real Label Studio ------------------------------------------------------


def part_b(work: Path, redis_url: str, quick: bool) -> dict[str, float]:
    from label_studio_sdk import LabelStudio

    from ml_backend.holder import ModelHolder
    from ml_backend.jobs.predict import run_bulk
    from ml_backend.studio import LocalLabelStudio, ensure_template

    ls_venv = REPO / ".ls-venv"
    if not (ls_venv / "bin" / "label-studio").exists():
        raise SystemExit("bench: (b) needs Label Studio's venv: run `make ls-env`")
    count = 16 if quick else 64
    images = work / "bulk-images"
    images.mkdir()
    paths = []
    for i in range(count):
        path = images / f"bulk{i}.png"
        Image.new("RGB", (80 + i, 60), ((23 * i) % 256, 120, (57 * i) % 256)).save(path)
        paths.append(path)
    studio = LocalLabelStudio(ls_venv, ensure_template(ls_venv, CACHE), root=work / "label-studio")
    studio.start()
    results: dict[str, float] = {}
    try:
        client = LabelStudio(base_url=studio.url, api_key=studio.legacy_token)
        headers = {"Authorization": f"Token {studio.legacy_token}"}

        def project(title: str) -> int:
            created = client.projects.create(title=title, label_config=CONFIG)
            files = [(f"file{i}", (p.name, p.read_bytes(), "image/png")) for i, p in enumerate(paths)]
            httpx.post(f"{studio.url}/api/projects/{created.id}/import", files=files, headers=headers,
                       timeout=120).raise_for_status()  # fmt: skip
            return int(created.id)

        base: dict[str, Any] = {
            "model": str(tiny_model_dir()), "model_name": "tiny", "device": "cpu", "max_new_tokens": 32,
            "redis_url": redis_url, "cache_ttl": 0, "ls_url": studio.url, "ls_api_key": studio.legacy_token,
            "data_dir": work / "data",
        }  # fmt: skip
        batched = Settings(_env_file=None, batch_size=16, **base)  # type: ignore[call-arg]
        single = Settings(_env_file=None, batch_size=1, **base)  # type: ignore[call-arg]
        holder = ModelHolder(batched)
        holder.engine()  # load once, outside the timings
        times = {}
        for name, settings, chunk in (("one at a time", single, 1), ("batched", batched, 64)):
            pid = project(f"bulk {name}")
            started = time.perf_counter()
            state = run_bulk(settings, pid, chunk=chunk, client=client, holder=holder)
            times[name] = time.perf_counter() - started
            if state.written != count:
                raise SystemExit(f"bench: bulk {name} wrote {state.written} of {count} predictions")
        holder.close()
        ratio = times["one at a time"] / times["batched"]
        results["bulk_ratio"] = ratio
        print(f"(b) bulk pre-annotation of {count} Label Studio tasks, tiny Qwen2-VL on CPU, 32 new tokens each:")
        print(f"    one at a time {times['one at a time']:.1f} s ({count / times['one at a time']:.2f} tasks/s), "
              f"batched {times['batched']:.1f} s ({count / times['batched']:.2f} tasks/s)")  # fmt: skip
        print(f"    speed-up {ratio:.1f}x (target >= 3x: {'PASS' if ratio >= 3 else 'FAIL'})")
    finally:
        studio.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="a,b,c", help="Parts to run: a (and a'), b, c.")
    parser.add_argument("--quick", action="store_true", help="Fewer requests and tasks (a smoke run).")
    parser.add_argument("--serve-noop", nargs=3, metavar=("PORT", "MEDIA", "REDIS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_noop:
        serve_noop(int(args.serve_noop[0]), Path(args.serve_noop[1]), args.serve_noop[2])
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parts = set(args.only.split(","))
    print(f"machine: {machine()}")
    print(f"load average before: {load()}")
    redis_url = redis_db()
    import redis

    results: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
            work = Path(tmp)
            runs: list[tuple[str, Callable[[Path, str, bool], dict[str, float]]]] = [
                ("a", part_a), ("c", part_a2_c), ("b", part_b)]  # fmt: skip
            for key, run in runs:
                if key in parts or (key == "c" and "a" in parts):
                    sub = work / key
                    sub.mkdir()
                    results.update(run(sub, redis_url, args.quick))
    finally:
        redis.Redis.from_url(redis_url).flushdb()
    print(f"load average after: {load()}  (other work on the machine slows every part, not evenly)")
    failed = [key for key, ok in (
        ("a/1", results.get("ratio/1", 1) >= 1), ("a/100", results.get("ratio/100", 1) >= 1),
        ("a'", results.get("share", 0) <= 0.05), ("b", results.get("bulk_ratio", 3) >= 3),
        ("c", results.get("cache_ratio", 0) <= 0.01),
    ) if not ok]  # fmt: skip
    print("all targets met" if not failed else f"targets missed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
