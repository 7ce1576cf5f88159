"""Fixtures for the ML-backend tests; a test module loads them with ``pytest_plugins = ["backend_fixtures"]``.

- ``image_server``: a threaded HTTP server on 127.0.0.1 serving generated PNGs and every failure an image URL
  can have (401, 404, slow, not an image, a decompression bomb, a redirect to the metadata address), plus a
  Label-Studio-like ``/data/upload/`` that needs ``Token GOOD_TOKEN``.
- ``shared_engine(family)``: one real :class:`TransformersEngine` per family for the session.
- ``memo_adapter``: the tiny Qwen2-VL's memorising adapter (trained once per machine, cached): with it the real
  engine answers three prompts with fixed texts, one of them a Qwen2-VL box.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from backend_helpers import CACHE, GOOD_TOKEN, ImageServer, bomb_png, memo_pairs, png_bytes, train_memo_adapter

from ml_backend.engines.base import AdapterRef
from ml_backend.settings import Settings


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = ImageServer(url=f"http://127.0.0.1:{server.server_address[1]}")
    size_re = re.compile(r"/(\d+)x(\d+)\.png$")

    class Handler(BaseHTTPRequestHandler):
        def _send(
            self, status: int, body: bytes, kind: str = "image/png", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            state.hits.append(self.path)
            state.auth_headers.append(self.headers.get("Authorization", ""))
            size = size_re.search(path)
            if path.startswith("/img/") and size:
                self._send(200, png_bytes(int(size[1]), int(size[2])))
            elif path.startswith("/data/upload/") and size:
                if self.headers.get("Authorization") != f"Token {GOOD_TOKEN}":
                    self._send(401, b'{"detail": "Authentication credentials were not provided."}', "application/json")
                else:
                    self._send(200, png_bytes(int(size[1]), int(size[2])))
            elif re.fullmatch(r"/tasks/\d+/presign/", path):  # Label Studio's cloud-storage proxy
                if self.headers.get("Authorization") != f"Token {GOOD_TOKEN}":
                    self._send(401, b'{"detail": "no"}', "application/json")
                else:
                    self._send(302, b"", "text/plain", {"Location": "/img/20x10.png"})
            elif path.startswith("/status/"):
                self._send(int(path.rsplit("/", 1)[1]), b"nope", "text/plain")
            elif path == "/slow.png":
                time.sleep(2.0)
                self._send(200, png_bytes(10, 10))
            elif path == "/text":
                self._send(200, b"<html>login page</html>", "text/html")
            elif path == "/garbage.png":
                self._send(200, b"this is not a png at all", "image/png")
            elif path == "/bomb.png":
                self._send(200, bomb_png())
            elif path == "/redirect":
                self._send(302, b"", "text/plain", {"Location": parse_qs(parts.query)["to"][0]})
            else:
                self._send(404, b"not found", "text/plain")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- the real engine and a memorising adapter ----------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_engine(tiny_model: Callable[..., Path]) -> Iterator[Callable[..., Any]]:
    """``shared_engine(family="qwen2_vl")``: one TransformersEngine per family for the session (float32, CPU,
    batch size 4). Tests that load adapters unload them again."""
    from ml_backend.engines.transformers import TransformersEngine

    engines: dict[str, Any] = {}

    def get(family: str = "qwen2_vl") -> Any:
        if family not in engines:
            settings = Settings(_env_file=None, model=str(tiny_model(family)), batch_size=4, device="cpu")  # type: ignore[call-arg]
            engines[family] = TransformersEngine(settings)
        return engines[family]

    yield get
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="session")
def memo_adapter(tiny_model: Callable[..., Path]) -> AdapterRef:
    """An AdapterRef (version ``memo``) to the memorising adapter of the tiny Qwen2-VL, trained once and cached
    under ``$LABELLOOP_CACHE/tiny-models`` keyed by the base model and this trainer's source."""
    base = tiny_model("qwen2_vl")
    source = inspect.getsource(train_memo_adapter) + json.dumps(memo_pairs()) + base.name
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    root = CACHE / "tiny-models"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"memo-adapter-{key}"
    with (root / "memo-adapter.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "adapter_model.safetensors").exists():
            tmp = root / f".memo-adapter-{key}-{time.time_ns()}"
            train_memo_adapter(base, tmp)
            tmp.replace(path)
    return AdapterRef("memo", str(path))
