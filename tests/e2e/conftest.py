"""Fixtures for end-to-end tests against a real Label Studio (LS) started from the cached template data dir.

- ``label_studio`` (session): one :class:`~ml_backend.studio.LocalLabelStudio` for the whole session, from the LS
  venv in ``LABELLOOP_TEST_LS_VENV`` (default ``<repo>/.ls-venv``; ``make ls-env`` builds it and the template).
- ``ls_client``: the SDK client with the legacy token (``Authorization: Token``); ``ls_http``: an httpx client with
  the same header; ``ls_pat``: the admin's personal access token (one per session: LS allows one per user).
- ``caption_project``: a new project with the caption label config (one per test).
- ``make_pngs``, ``upload_images`` and ``sync_local_storage`` put images into a project the two ways LS serves
  them: uploads (``/data/upload/...``) and local-files storage (``/data/local-files/?d=...``).
- ``http_recorder``: a stdlib HTTP server on 127.0.0.1 that answers 200 and records every request (a webhook
  receiver or stand-in backend).

Every test module here marks its tests ``@pytest.mark.e2e``.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from label_studio_sdk import LabelStudio
from PIL import Image

from ml_backend.studio import LocalLabelStudio, ensure_template

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LABELLOOP_CACHE") or Path.home() / ".cache" / "labelloop")
MAX_FILES_PER_IMPORT = 100  # LS's DATA_UPLOAD_MAX_NUMBER_FILES

CAPTION_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image" editable="true" maxSubmissions="1"/>
</View>"""


@pytest.fixture(scope="session")
def ls_venv() -> Path:
    """The venv with the ``label-studio`` executable (``LABELLOOP_TEST_LS_VENV`` or ``<repo>/.ls-venv``)."""
    venv = Path(os.environ.get("LABELLOOP_TEST_LS_VENV") or REPO / ".ls-venv")
    if not (venv / "bin" / "label-studio").is_file():
        pytest.fail(f"no label-studio in {venv}: run `make ls-env` (or set LABELLOOP_TEST_LS_VENV)")
    return venv


@pytest.fixture(scope="session")
def ls_template(ls_venv: Path) -> Path:
    """The migrated, user-less template data dir (built once per LS version, ~30-55 s the first time)."""
    return ensure_template(ls_venv, CACHE)


@pytest.fixture(scope="session")
def label_studio(
    ls_venv: Path, ls_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalLabelStudio]:
    """A running Label Studio shared by the session; stopped at its end. Do not stop it in a test."""
    studio = LocalLabelStudio(ls_venv, ls_template, root=tmp_path_factory.mktemp("label-studio"))
    studio.start()
    try:
        yield studio
    finally:
        studio.stop()


@pytest.fixture(scope="session")
def ls_client(label_studio: LocalLabelStudio) -> LabelStudio:
    """The LS SDK client authenticated with the admin's legacy token."""
    return LabelStudio(base_url=label_studio.url, api_key=label_studio.legacy_token)


@pytest.fixture(scope="session")
def ls_http(label_studio: LocalLabelStudio) -> Iterator[httpx.Client]:
    """An httpx client on the LS URL sending ``Authorization: Token <legacy token>``."""
    headers = {"Authorization": f"Token {label_studio.legacy_token}"}
    with httpx.Client(base_url=label_studio.url, headers=headers, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="session")
def ls_pat(label_studio: LocalLabelStudio) -> str:
    """The admin's personal access token (a JWT refresh token; refresh it into a Bearer access token)."""
    return label_studio.create_personal_access_token()


@pytest.fixture
def caption_project(ls_client: LabelStudio, request: pytest.FixtureRequest) -> Any:
    """A new project (SDK object) with the image-caption config, titled after the test."""
    return ls_client.projects.create(title=request.node.name[:50], label_config=CAPTION_CONFIG)


@pytest.fixture
def make_pngs(tmp_path: Path) -> Callable[..., list[Path]]:
    """``make_pngs(count, directory=None, size=(32, 24), prefix="img") -> [Path]``: small solid-colour PNGs.

    Image ``i`` is ``size[0] + i`` pixels wide and ``size[1]`` high, so every file has its own size and bytes.
    ``directory`` defaults to a fresh directory under ``tmp_path``.
    """
    counter = itertools.count()

    def make(
        count: int, directory: Path | None = None, size: tuple[int, int] = (32, 24), prefix: str = "img"
    ) -> list[Path]:
        target = directory or tmp_path / f"pngs-{next(counter)}"
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(count):
            path = target / f"{prefix}{i}.png"
            colour = ((40 * i) % 256, (90 + 70 * i) % 256, (200 - 30 * i) % 256)
            Image.new("RGB", (size[0] + i, size[1]), colour).save(path, format="PNG")
            paths.append(path)
        return paths

    return make


@pytest.fixture(scope="session")
def upload_images(ls_http: httpx.Client) -> Callable[[int, list[Path]], list[int]]:
    """``upload_images(project_id, paths) -> [task id]``: upload files as tasks, in order.

    Uses ``POST /api/projects/{id}/import`` (multipart) with one field name per file (``file0``, ``file1``, ...:
    LS keeps only the last file of a repeated field name), at most 100 files per request (LS refuses more).
    Fails the test with LS's answer when a batch does not become exactly one task per file.
    """

    def upload(project_id: int, paths: list[Path]) -> list[int]:
        task_ids: list[int] = []
        for start in range(0, len(paths), MAX_FILES_PER_IMPORT):
            batch = paths[start : start + MAX_FILES_PER_IMPORT]
            files = [(f"file{i}", (path.name, path.read_bytes(), "image/png")) for i, path in enumerate(batch)]
            response = ls_http.post(
                f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, files=files
            )
            if response.status_code != 201 or response.json().get("task_count") != len(batch):
                pytest.fail(f"import of {len(batch)} files answered {response.status_code}: {response.text[:500]}")
            task_ids.extend(response.json()["task_ids"])
        return task_ids

    return upload


@pytest.fixture(scope="session")
def sync_local_storage(ls_client: LabelStudio, label_studio: LocalLabelStudio) -> Callable[..., Any]:
    """``sync_local_storage(project_id, directory, regex=r".*\\.png") -> storage``: add and sync local-files storage.

    ``directory`` must lie under ``label_studio.files_root`` (LS's LOCAL_FILES_DOCUMENT_ROOT). Each matching file
    becomes a task whose ``image`` is ``<LS url>/data/local-files/?d=<path relative to the root>``. The sync runs
    inline (no Redis queue in LS OSS); the returned storage has status ``completed``.
    """

    def sync(project_id: int, directory: Path, regex: str = r".*\.png") -> Any:
        if not directory.resolve().is_relative_to(label_studio.files_root.resolve()):
            pytest.fail(f"{directory} is not under the LS files root {label_studio.files_root}")
        storage = ls_client.import_storage.local.create(
            project=project_id, path=str(directory), regex_filter=regex, use_blob_urls=True
        )
        return ls_client.import_storage.local.sync(id=storage.id)

    return sync


@dataclass
class RecordedRequest:
    """One request received by :class:`HttpRecorder`."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpRecorder:
    """A threaded HTTP server on 127.0.0.1 that answers every request ``200 {}`` and records it."""

    url: str
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path_prefix: str = "/") -> list[RecordedRequest]:
        """A snapshot of the requests so far whose path starts with ``path_prefix``."""
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]


@pytest.fixture
def http_recorder() -> Iterator[HttpRecorder]:
    """A running :class:`HttpRecorder` (e.g. a webhook receiver LS can reach: SSRF protection is off)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    recorder = HttpRecorder(url=f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = RecordedRequest(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
            with recorder.lock:
                recorder.requests.append(request)
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._record()

        def do_POST(self) -> None:
            self._record()

        def do_PUT(self) -> None:
            self._record()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
