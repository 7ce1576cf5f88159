"""scripts/demo.py's parts that need no Label Studio: PID files, settings, sample images.

The whole path (backend, worker, setup, reviews, retrain, swap) runs in tests/e2e/test_demo_path.py.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from ml_backend.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("labelloop_demo_unit", REPO / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_stop_ends_the_process_group_it_started_and_removes_the_pid_file(demo: ModuleType, tmp_path: Path) -> None:
    paths = demo.DemoPaths(tmp_path)
    # a stand-in whose command line carries the marker of the worker, with a child in its process group
    argv = [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"]
    pid, started = demo.start_process(paths, "worker", [*argv, "worker"], {"PATH": "/usr/bin:/bin"})
    assert started and demo.running_pid(paths, "worker") == pid
    assert demo.start_process(paths, "worker", argv, {}) == (pid, False), "a running one is reused"
    children = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    assert str(pid) in children
    assert demo.stop(paths) == ["worker"]
    assert not paths.pid_file("worker").exists()
    assert all(not demo._alive(int(child)) for child in children)
    assert demo.stop(paths) == []


def test_a_pid_file_naming_someone_elses_process_is_not_signalled(demo: ModuleType, tmp_path: Path) -> None:
    paths = demo.DemoPaths(tmp_path)
    other = subprocess.Popen(["sleep", "300"])  # alive, but not a labelloop worker
    try:
        paths.pid_file("worker").write_text(f"{other.pid}\n")
        assert demo.running_pid(paths, "worker") is None
        assert demo.stop(paths) == []
        assert other.poll() is None
        assert not paths.pid_file("worker").exists()
    finally:
        other.kill()
        other.wait()


def test_demo_settings_are_valid_settings_and_stay_in_the_demo_directory(
    demo: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = demo.DemoPaths(tmp_path / "demo")
    ls = {"url": "http://127.0.0.1:8080", "legacy_token": "t" * 40, "files_root": "/ls/files", "data_dir": "/ls/data"}
    env = demo.demo_env(
        paths, ls=ls, redis_url="redis://127.0.0.1:6379/0", model="/m", model_name="tiny", backend_port=9191, secret="s"
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_dir == paths.data
    assert (settings.backend_url, settings.port, settings.model_label) == ("http://127.0.0.1:9191", 9191, "tiny")
    assert settings.redis_prefix == settings.queue_name == f"labelloop-demo-{paths.instance}"
    assert demo.DemoPaths(tmp_path / "demo").instance == paths.instance  # kept with the directory
    assert demo.DemoPaths(tmp_path / "other").instance != paths.instance
    assert (settings.min_new_reviews, settings.cooldown_seconds, settings.promote_margin) == (4, 0, 1.0)
    real = demo.demo_env(
        paths, ls=ls, redis_url="redis://x:1/0", model="/real", model_name=None, backend_port=1, secret="s"
    )
    assert not set(demo.TINY_MODEL) & set(real), "the tiny model's shortcuts are not applied to a real model"
    demo.write_env_file(paths.env_file, env)
    assert paths.env_file.stat().st_mode & 0o777 == 0o600


def test_sample_images_have_reference_captions_and_are_kept(demo: ModuleType, tmp_path: Path) -> None:
    captions: dict[str, Any] = demo.sample_images(tmp_path, 4)
    assert sorted(captions) == ["screenshot-01.png", "screenshot-03.png", "shapes-00.png", "shapes-02.png"]
    assert captions["screenshot-01.png"].startswith("A settings screen; a red rectangle marks ")
    assert Image.open(tmp_path / "screenshot-01.png").size == (480, 320)
    before = (tmp_path / "shapes-00.png").stat().st_mtime_ns
    assert demo.sample_images(tmp_path, 4) == captions
    assert (tmp_path / "shapes-00.png").stat().st_mtime_ns == before
