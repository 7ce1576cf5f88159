"""`labelloop serve` (gunicorn: one worker, threads, no model in the master) and `labelloop predict`'s options."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from backend_helpers import CAPTION_CONFIG
from click.testing import CliRunner
from PIL import Image

from ml_backend.cli import cli
from ml_backend.cli.serve import gunicorn_options
from ml_backend.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


@pytest.fixture
def served(tiny_model: Callable[..., Path], redis_url: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`labelloop serve` on a free port with the tiny model; yields (url, master pid)."""
    port = _free_port()
    media = tmp_path / "media"
    (media / "upload" / "1").mkdir(parents=True)
    Image.new("RGB", (40, 30), (10, 200, 10)).save(media / "upload" / "1" / "a.png")
    env = {key: value for key, value in os.environ.items() if not key.startswith("LABELLOOP_")}
    env.update({
        "LABELLOOP_MODEL": str(tiny_model("qwen2_vl")), "LABELLOOP_MODEL_NAME": "tiny", "LABELLOOP_PORT": str(port),
        "LABELLOOP_REDIS_URL": redis_url, "LABELLOOP_LS_MEDIA_DIR": str(media), "LABELLOOP_THREADS": "4",
        "LABELLOOP_MAX_NEW_TOKENS": "4", "LABELLOOP_DATA_DIR": str(tmp_path / "data"),
    })  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "serve"], env=env, cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"labelloop serve exited: {(tmp_path / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"labelloop serve did not answer: {(tmp_path / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_serve_loads_the_model_in_the_worker_only(served: tuple[str, int]) -> None:
    url, master = served
    assert httpx.get(f"{url}/health").json()["loaded"] is False
    body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/1/a.png"}}], "project": "1.1",
            "label_config": CAPTION_CONFIG}  # fmt: skip
    response = httpx.post(f"{url}/predict", json=body, timeout=120)
    assert response.status_code == 200 and response.json()["model_version"] == "tiny@base"
    assert httpx.get(f"{url}/health").json()["loaded"] is True
    [worker] = _children(master)  # one gunicorn worker
    assert "libtorch" in _maps(worker)
    assert "libtorch" not in _maps(master)  # no --preload: the master never imported torch


def test_gunicorn_options(make_settings: Callable[..., Settings]) -> None:
    options = gunicorn_options(make_settings(host="0.0.0.0", port=9091, threads=12, predict_deadline=80))
    assert options["bind"] == "0.0.0.0:9091"
    assert (options["workers"], options["worker_class"], options["threads"]) == (1, "gthread", 12)
    assert options["preload_app"] is False and options["timeout"] == 140


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict"], "Missing option '--project'"),
        (["predict", "--project", "x"], "'x' is not a valid integer"),
        (["predict", "--project", "1", "--chunk", "501"], "501 is not in the range 1<=x<=500"),
    ],
)
def test_predict_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output


def test_predict_inline_needs_label_studio(capsys: pytest.CaptureFixture[str]) -> None:
    from ml_backend.cli import main

    with pytest.raises(SystemExit) as info:
        main(["predict", "--project", "3", "--inline"])
    assert info.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("labelloop: error: bulk prediction: LABELLOOP_LS_URL and LABELLOOP_LS_API_KEY must be set")
    )
