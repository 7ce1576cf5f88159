"""Benchmark of the retraining loop's own overhead, on CPU with the tiny Qwen2-VL.

Everything is real and local: a Label Studio (from the cached template), a private ``redis-server``, the backend
(the Flask app with the swap watcher, in this process), ``labelloop worker`` (a subprocess, RQ with its
scheduler), ``swift sft``. It prints:

1. ``/webhook`` latency under 100 concurrent requests, served by gunicorn as ``labelloop serve`` runs it (one
   process, 8 threads, ``ml_backend.wsgi:application()``) in its own process, measured by an asyncio client:
   p50/p90/p99/max and throughput. Target: p99 <= 20 ms. The client is a closed loop (each of the 100
   connections sends its next event as soon as the previous answer came), so by Little's law the latency is about
   100 / throughput: p99 <= 20 ms needs well over 5,000 events/s from one process. In the same run, alternating
   with it, the *floor*: a WSGI app that only reads the body and answers, under the same gunicorn — what the
   server, the client and the machine cost without any app; labelloop's figures are also given as ratios to it.
2. The time from the Nth review (the annotation whose webhook crosses ``min_new_reviews``) to the backend
   serving the new adapter, with a ``--steps``-step run (default 20) so the figure is mostly the loop's own
   overhead, and how it splits: webhook + decision (reconcile from the LS API), queue, export, ms-swift start-up,
   training, storing the adapter, evaluation (candidate and current on the held-out tasks, base model load
   included), promotion -> swap in the backend. Target: <= 60 s.
3. Swaps under a steady ``/predict`` load (``--load-threads`` clients asking for 4 tasks each, in a loop): the
   project is rolled back to the base model and forward to the adapter again (registry + Redis message, as
   ``labelloop models rollback`` does) while the clients keep asking; failed requests (target: 0), how long each
   flip took, versions seen. (Measured after 2, so that the load does not slow the loop it times.)

Usage: ``.venv/bin/python bench/loop.py [--steps 20] [--reviews 40] [--requests 2000] [--rounds 3]``;
``--only webhook`` for the ``/webhook`` figures alone (no Label Studio, no training). Needs ``.ls-venv``
(``make ls-env``). On a shared machine, other processes' load shows in every figure; the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from loop_fixtures import (  # noqa: E402
    LoopSystem,
    colour_project,
    colour_result,
    free_port,
    settings_env,
    throwaway_redis,
)

from ml_backend.settings import Settings  # noqa: E402

CACHE = Path(os.environ.get("LABELLOOP_CACHE", Path.home() / ".cache" / "labelloop"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def tiny_model_dir(family: str = "qwen2_vl") -> Path:
    """The tiny model, cached like the tests' fixture (same key: builder source + transformers version)."""
    import transformers

    from ml_backend.tiny_model import build_tiny_model

    source = (REPO / "ml_backend" / "tiny_model.py").read_bytes()
    key = hashlib.sha256(source + transformers.__version__.encode()).hexdigest()[:12]
    path = CACHE / "tiny-models" / f"{family}-{key}"
    if not (path / "labelloop_tiny.json").exists():
        build_tiny_model(path, family)  # type: ignore[arg-type]
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip


# --- 1. webhook latency -------------------------------------------------------------------------------------


async def _hammer(port: int, total: int, concurrency: int, first_id: int) -> tuple[list[float], int, float]:
    """``total`` webhook POSTs over ``concurrency`` keep-alive connections, each sending its next request as soon
    as the previous answer arrived (closed loop). A bare asyncio HTTP/1.1 client: a few microseconds of CPU per
    request, so the client does not take the server's cores."""
    import json

    config = (
        "<View><Image name='image' value='$image'/>"
        "<Choices name='c' toName='image'><Choice value='a'/></Choices></View>"
    )
    latencies: list[float] = []
    failures = 0
    ids = iter(range(first_id, first_id + total))

    async def connection() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for aid in ids:
                event = {"action": "ANNOTATION_CREATED", "project": {"id": 999_999, "label_config": config},
                         "annotation": {"id": aid, "result": [], "was_cancelled": False}}  # fmt: skip
                body = json.dumps(event).encode()
                head = (f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
                started = time.perf_counter()
                writer.write(head + body)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                failures += b" 200 " not in status_line
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, failures, time.perf_counter() - started


FLOOR_APP = """
def app(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = b'{"action":"ANNOTATION_CREATED","status":"recorded","project":999999,"pending":1}\\n'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


def _gunicorn(port: int, target: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """gunicorn as ``labelloop serve`` runs it: one worker process with 8 threads, the app built in the worker."""
    command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "8",
               "--bind", f"127.0.0.1:{port}", "--log-level", "warning", target]  # fmt: skip
    server = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(f"http://127.0.0.1:{port}/webhook", json={"action": "PING"}, timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    server.terminate()
    raise SystemExit(f"bench: {target} did not answer on port {port}")


def bench_webhook(
    root: Path, redis_url: str, requests: int, concurrencies: list[int], rounds: int = 3
) -> dict[str, dict[int, dict[str, float]]]:
    """``/webhook`` of labelloop and, in the same run, of the *floor*: a WSGI app that only reads the body and
    answers a fixed JSON, under the same gunicorn. Rounds alternate between the two; each figure is the median
    of the rounds. The floor is what gunicorn, the client and this machine cost without any app."""
    overrides = {"data_dir": str(root / "webhook-data"), "redis_url": redis_url, "min_new_reviews": 10**9,
                 "queue_name": "bench-webhook", "log_level": "WARNING", "reconcile_after": 0}  # fmt: skip
    env = {**os.environ, **OFFLINE, **settings_env(overrides)}
    floor_dir = root / "webhook-floor"
    floor_dir.mkdir(exist_ok=True)
    (floor_dir / "floor_app.py").write_text(FLOOR_APP)
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {}
    try:
        for name, target, cwd in (("labelloop", "ml_backend.wsgi:application()", REPO),
                                  ("floor", "floor_app:app", floor_dir)):  # fmt: skip
            port = free_port()
            servers[name] = (port, _gunicorn(port, target, env, cwd))
            asyncio.run(_hammer(port, 500, 8, 1))  # warm-up: connections, imports, the Lua script
            runs[name] = {concurrency: [] for concurrency in concurrencies}
        next_id = 10_000
        for concurrency in concurrencies:
            for _ in range(rounds):
                for name, (port, _) in servers.items():
                    latencies, failures, elapsed = asyncio.run(_hammer(port, requests, concurrency, next_id))
                    next_id += requests
                    ms = [v * 1000 for v in latencies]
                    runs[name][concurrency].append({
                        "requests": len(ms), "failures": failures, "p50": percentile(ms, 50),
                        "p90": percentile(ms, 90), "p99": percentile(ms, 99), "max": max(ms), "rps": len(ms) / elapsed,
                    })  # fmt: skip
    finally:
        for _, server in servers.values():
            server.terminate()
            server.wait(30)
    return {name: {concurrency: _median(found) for concurrency, found in by.items()} for name, by in runs.items()}


def _median(found: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (request and failure counts summed)."""
    summed = ("requests", "failures")
    return {key: sum(r[key] for r in found) if key in summed else sorted(r[key] for r in found)[len(found) // 2]
            for key in found[0]}  # fmt: skip


def handler_time(root: Path, redis_url: str, requests: int = 2000) -> float:
    """Mean time of one /webhook request inside the app (Flask test client: no HTTP, no queueing), in ms."""
    from ml_backend.app import create_app

    settings = Settings(_env_file=None, data_dir=root / "handler-data", redis_url=redis_url, min_new_reviews=10**9,
                        queue_name="bench-handler", reconcile_after=0)  # type: ignore[call-arg]  # fmt: skip
    client = create_app(settings).test_client()
    config = (
        "<View><Image name='image' value='$image'/>"
        "<Choices name='c' toName='image'><Choice value='a'/></Choices></View>"
    )

    def body(aid: int) -> dict[str, Any]:
        return {"action": "ANNOTATION_CREATED", "project": {"id": 999_998, "label_config": config},
                "annotation": {"id": aid, "result": [], "was_cancelled": False}}  # fmt: skip

    for aid in range(200):
        client.post("/webhook", json=body(aid))
    started = time.perf_counter()
    for aid in range(200, 200 + requests):
        client.post("/webhook", json=body(aid))
    return (time.perf_counter() - started) / requests * 1000


# --- 2 and 3. the loop, and the swap under load --------------------------------------------------------------


class PredictLoad:
    """Threads asking the backend for predictions of a few tasks in a loop; records every answer."""

    def __init__(self, url: str, body: dict[str, Any], threads: int) -> None:
        self.url, self.body = url, body
        self.answers: list[tuple[float, int, frozenset[str]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=self.body)
                    items = response.json().get("results", []) if response.status_code == 200 else []
                    versions = frozenset(item["model_version"] for item in items if item)
                    if response.status_code == 200 and len(versions) != 1:
                        self.errors.append(f"an answer without exactly one version: {versions}")
                    self.answers.append((time.time(), response.status_code, versions))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    self.answers.append((time.time(), 0, frozenset()))

    def __enter__(self) -> PredictLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def bench_loop(
    root: Path, redis_url: str, studio: Any, model: Path, steps: int, reviews: int, load_threads: int
) -> dict[str, Any]:
    import redis
    from label_studio_sdk import LabelStudio

    from ml_backend.events import Loop

    live = 10
    overrides: dict[str, Any] = {
        "data_dir": str(root / "loop-data"), "redis_url": redis_url, "queue_name": "bench-loop",
        "ls_url": studio.url, "ls_api_key": studio.legacy_token, "model": str(model), "model_family": "qwen2_vl",
        "device": "cpu", "torch_dtype": "float32", "min_new_reviews": reviews, "cooldown_seconds": 0,
        "max_steps": steps, "train_batch_size": 1, "grad_accum": 1, "max_pixels": 50176,
        "gradient_checkpointing": False, "val_fraction": 0.2, "export_workers": 1, "swap_poll_interval": 5.0,
        "near_dup_distance": -1, "log_level": "INFO", "cache_ttl": 0,
    }  # fmt: skip
    settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
    system = LoopSystem(settings, {**OFFLINE, **settings_env(overrides)}, root)
    system.start_backend()
    system.start_worker()
    client = LabelStudio(base_url=studio.url, api_key=studio.legacy_token)
    try:
        project = colour_project(client, studio.files_root, annotated=reviews - live, unannotated=live,
                                 backend_url=system.backend_url)  # fmt: skip
        holder = system.app.extensions["labelloop"].holder
        images = list(project.truth)
        probe = [{"id": project.tasks[u], "data": {"image": u}} for u in images[:4]]
        config = client.projects.get(id=project.id).label_config
        body = {"tasks": probe, "project": f"{project.id}.1", "label_config": config}
        httpx.post(f"{system.backend_url}/predict", json=body, timeout=300)  # loads the base model: not a swap cost
        base_version = holder.model_version(project.id)

        # 2. The Nth review -> the backend serves the new adapter (no other load on the machine from us).
        for url in images[reviews - live :]:
            client.annotations.create(id=project.tasks[url], result=colour_result(project.truth[url]))
        nth_review = time.time()  # the webhook of the Nth review was delivered inside that call
        while holder.model_version(project.id) == base_version:
            if time.time() - nth_review > 900:
                raise RuntimeError(f"no swap after 900 s:\n{system.worker_log()}")
            run = system.run_of(project.id)
            if run is not None and run.status.is_terminal and run.status.value != "promoted":
                raise RuntimeError(f"run {run.id} ended {run.status.value}: {run.error}\n{system.worker_log()}")
            time.sleep(0.01)
        swapped = time.time()
        run = system.run_of(project.id)
        version = system.registry.get_version(run.version_id)
        evaluation_lines = [line.split("INFO ", 1)[-1] for line in system.worker_log(400).splitlines()
                            if "evaluation:" in line or "loaded qwen" in line]  # fmt: skip

        # 3. Swaps under a steady /predict load: back to the base model, then forward to the adapter again,
        # through the registry and the Redis message, as `labelloop models rollback` does.
        loop = Loop(settings, redis.Redis.from_url(redis_url))
        swaps = []
        with PredictLoad(f"{system.backend_url}/predict", body, load_threads) as load:
            for target in ("base", version.id):
                seen = len(load.answers)
                while len(load.answers) < seen + 2 * load_threads:
                    time.sleep(0.05)
                started = time.time()
                system.registry.rollback(project.id, target)
                loop.publish_activation(project.id, None if target == "base" else target)
                wanted = base_version if target == "base" else f"{settings.model_label}@{target}"
                while holder.model_version(project.id) != wanted:
                    time.sleep(0.005)
                swaps.append((target, time.time() - started, time.time()))
            seen = len(load.answers)
            while len(load.answers) < seen + 2 * load_threads:
                time.sleep(0.05)
    finally:
        system.stop()
    timings = run.metrics.get("timings", {})
    train_wall = timings.get("train_wall", 0.0)
    runtime = timings.get("train_runtime", 0.0)
    split = {
        "webhook + decision (reconcile from LS)": run.created_at - nth_review,
        "queue (job pickup, work-horse fork)": (run.started_at or run.created_at) - run.created_at,
        "export": timings.get("export", 0.0),
        "ms-swift start-up and save": train_wall - runtime,
        "training": runtime,
        "store adapter": timings.get("store_adapter", 0.0),
        "evaluation (2 models)": timings.get("evaluate", 0.0),
        "promote -> swap in the backend": swapped - (version.promoted_at or swapped),
    }
    split["other (bookkeeping, registry, Redis)"] = (swapped - nth_review) - sum(split.values())
    return {
        "total": swapped - nth_review, "split": split, "run": run.id, "version": version.id,
        "candidate": run.metrics["candidate"]["score"], "current": run.metrics["current"]["score"],
        "held_out": run.metrics["candidate"]["tasks"], "steps": run.metrics["train"]["global_step"],
        "evaluation_lines": evaluation_lines, "swaps": swaps, "requests": len(load.answers),
        "failed": sum(1 for a in load.answers if a[1] != 200) + len(load.errors),
        "versions": sorted({v for a in load.answers for v in a[2]}), "errors": load.errors[:5],
        "answers": [(a[0], a[2]) for a in load.answers],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="ms-swift steps of the run (default 20)")
    parser.add_argument("--reviews", type=int, default=40, help="min_new_reviews; the last 10 come by webhook")
    parser.add_argument("--requests", type=int, default=2000, help="webhook requests measured (default 2000)")
    parser.add_argument("--concurrency", type=int, default=100, help="concurrent webhook requests (default 100)")
    parser.add_argument("--load-threads", type=int, default=4, help="/predict clients during the swap (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="webhook rounds per server, alternating (default 3)")
    parser.add_argument("--only", choices=["all", "webhook"], default="all",
                        help="`webhook`: only the /webhook figures (no Label Studio, no training)")  # fmt: skip
    args = parser.parse_args()
    os.environ.update(OFFLINE)

    from ml_backend.studio import LocalLabelStudio, ensure_template

    ls_venv = REPO / ".ls-venv"
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp, throwaway_redis() as (redis_url, _):
        root = Path(tmp)
        inside = handler_time(root, redis_url)
        print(f"\n/webhook inside the app (Flask test client, no HTTP): {inside:.2f} ms per request")
        hooks = bench_webhook(root, redis_url, args.requests, [1, 10, args.concurrency], args.rounds)
        print(f"/webhook over HTTP, gunicorn as `labelloop serve` runs it (1 process, 8 threads), closed loop, "
              f"median of {args.rounds} rounds alternating with the floor (a WSGI app that only reads the body, "
              "same gunicorn):")  # fmt: skip
        for concurrency, hook in hooks["labelloop"].items():
            floor = hooks["floor"][concurrency]
            verdict = ("  [target p99 <= 20 ms: " + ("met]" if hook["p99"] <= 20 else "MISSED]")
                       if concurrency == args.concurrency else "")  # fmt: skip
            print(f"  {concurrency:>3} concurrent, {hook['requests']:.0f} requests: p50 {hook['p50']:.1f} ms, "
                  f"p90 {hook['p90']:.1f} ms, p99 {hook['p99']:.1f} ms, max {hook['max']:.1f} ms, "
                  f"{hook['rps']:.0f} req/s, {hook['failures']:.0f} failed{verdict}")  # fmt: skip
            print(f"      floor: p50 {floor['p50']:.1f} ms, p99 {floor['p99']:.1f} ms, {floor['rps']:.0f} req/s; "
                  f"labelloop / floor: p99 {hook['p99'] / floor['p99']:.2f}x, "
                  f"throughput {hook['rps'] / floor['rps']:.2f}x")  # fmt: skip
        if args.only == "webhook":
            print(f"\nmachine after: {machine()}")
            return
        studio = LocalLabelStudio(ls_venv, ensure_template(ls_venv, CACHE), root=root / "label-studio")
        studio.start()
        try:
            loop = bench_loop(root, redis_url, studio, tiny_model_dir(), args.steps, args.reviews, args.load_threads)
        finally:
            studio.stop()
    print(f"\nNth review -> swapped model ({args.reviews} reviews, {loop['steps']}-step LoRA run {loop['run']} -> "
          f"{loop['version']}, held-out score {loop['current']:.2f} -> {loop['candidate']:.2f} on {loop['held_out']} "
          f"tasks): {loop['total']:.1f} s  [target <= 60 s: {'met' if loop['total'] <= 60 else 'MISSED'}]")  # fmt: skip
    for stage, seconds in loop["split"].items():
        print(f"  {stage:<42} {seconds:6.1f} s  {100 * seconds / loop['total']:5.1f} %")
    for line in loop["evaluation_lines"]:
        print(f"    {line}")
    print(f"\nswaps under load ({args.load_threads} clients on /predict, 4 tasks each): {loop['requests']} requests, "
          f"{loop['failed']} failed  [target 0: {'met' if loop['failed'] == 0 else 'MISSED'}]")  # fmt: skip
    for target, took, at in loop["swaps"]:
        after = sum(1 for t, _ in loop["answers"] if t >= at)
        print(f"  to {target}: flipped {took * 1000:.0f} ms after the registry changed; {after} answers after it")
    print(f"  versions served: {', '.join(loop['versions'])}")
    for error in loop["errors"]:
        print(f"  error: {error}")
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
