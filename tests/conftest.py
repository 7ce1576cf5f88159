"""Shared fixtures: an isolated environment, a real Redis database of our own, Settings, the tiny Qwen-VL.

- Every test runs with no ``LABELLOOP_*`` variables and offline hub settings (``_isolate_env``).
- ``redis_url`` claims an empty Redis database for the whole session (parallel sessions take different ones)
  and ``redis_client`` flushes it around each test. Redis is real: ``.ci/run`` starts one if none answers.
- ``make_settings`` builds a ``Settings`` pointed at the test's Redis and a temporary data dir.
- ``tiny_model`` builds (once, cached under ``$LABELLOOP_CACHE/tiny-models`` keyed by the builder's source and
  the transformers version) a tiny random Qwen-VL of the requested family.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ml_backend.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LABELLOOP_CACHE", Path.home() / ".cache" / "labelloop"))
TEST_REDIS = os.environ.get("LABELLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379")
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MODELSCOPE_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No LABELLOOP_* settings leak in from the developer's shell, and no hub is ever asked."""
    for key in list(os.environ):
        if key.startswith("LABELLOOP_") and key not in {"LABELLOOP_CACHE", "LABELLOOP_TEST_REDIS_URL"}:
            monkeypatch.delenv(key)
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    hf_home = tmp_path_factory.getbasetemp() / "hf-home"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(hf_home / "modelscope"))


def _claim_empty_db(base_url: str) -> tuple[int, redis.Redis]:
    """Claim a Redis database (1..15) no other test session holds; DB 0 records the claims."""
    control = redis.Redis.from_url(base_url, db=0)
    try:
        control.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - the environment, not the code
        pytest.exit(f"no Redis at {base_url}: start one (`.ci/run` does) ({exc})", returncode=3)
    for db in range(1, 16):
        if control.set(f"labelloop-test:claim:{db}", os.getpid(), nx=True, ex=4 * 3600):
            return db, control
    pytest.exit("every Redis database 1..15 is claimed by another test session", returncode=3)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis database that this test session owns, empty at start and flushed at the end."""
    db, control = _claim_empty_db(TEST_REDIS)
    url = f"{TEST_REDIS.rstrip('/')}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        control.delete(f"labelloop-test:claim:{db}")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the session's database, flushed before and after the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def make_settings(tmp_path: Path, redis_url: str) -> Callable[..., Settings]:
    """Build Settings for a test: its own data dir and Redis database, plus any overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "redis_url": redis_url}
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


def _tiny_model_key() -> str:
    import transformers

    source = (REPO / "ml_backend" / "tiny_model.py").read_bytes()
    return hashlib.sha256(source + transformers.__version__.encode()).hexdigest()[:12]


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., Path]:
    """``tiny_model(family="qwen2_vl") -> Path``: a cached tiny random Qwen-VL directory (do not modify it)."""
    from ml_backend.tiny_model import build_tiny_model

    key = _tiny_model_key()
    root = CACHE / "tiny-models"
    root.mkdir(parents=True, exist_ok=True)

    def get(family: str = "qwen2_vl") -> Path:
        path = root / f"{family}-{key}"
        with (root / f"{family}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (path / "labelloop_tiny.json").exists():
                build_tiny_model(path, family)  # type: ignore[arg-type]
        return path

    return get
