"""The local Label Studio harness works, and the LS 1.23 facts later e2e tests build on hold on this setup.

Facts asserted here (see /work/shared/docs/LABEL_STUDIO.md): uploads become ``/data/upload/`` tasks served only
with the legacy ``Token`` header or a refreshed ``Bearer`` access token (never ``Bearer <PAT>``); local-files
storage yields absolute ``/data/local-files/?d=`` URLs; a repeated multipart field name keeps only the last file;
webhooks are delivered inside the API call even while a Redis server listens on localhost:6379; LS moves to the
next port when its port is busy; a server started from the template is independent and frees its port on stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from label_studio_sdk import LabelStudio

from ml_backend.studio import (
    LocalLabelStudio,
    PortMovedError,
    is_label_studio_process,
    label_studio_version,
    port_is_free,
    served_port,
)

from .conftest import REPO, HttpRecorder

pytestmark = pytest.mark.e2e

UNPREFIXED_FALLBACKS = {"USERNAME", "PASSWORD", "HOST", "PORT", "DEBUG", "LOG_LEVEL"}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def test_label_studio_answers_health_on_the_port_it_was_given(label_studio: LocalLabelStudio, ls_venv: Path) -> None:
    health = httpx.get(f"{label_studio.url}/health")
    version = httpx.get(f"{label_studio.url}/api/version/")

    assert health.status_code == 200
    assert health.json() == {"status": "UP"}
    assert version.status_code == 200, "the version endpoint needs no auth"
    assert label_studio_version(ls_venv) in version.text
    assert is_label_studio_process(label_studio.pid or 0)
    assert served_port(label_studio.log_path.read_text()) == int(label_studio.url.rsplit(":", 1)[1])


def test_label_studio_runs_in_a_clean_environment_with_its_own_home(label_studio: LocalLabelStudio) -> None:
    env = _environ(label_studio.pid or 0)

    assert not UNPREFIXED_FALLBACKS & env.keys(), "LS would read these instead of the LABEL_STUDIO_ ones"
    assert env["HOME"] == str(label_studio.home)
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(label_studio.data_dir)
    assert env["LABEL_STUDIO_HOST"] == label_studio.url
    assert {key for key in env if not key.startswith("LABEL_STUDIO_")} == {
        "PATH",
        "HOME",
        "PYTHONUNBUFFERED",
        "SENTRY_DSN",
        "FRONTEND_SENTRY_DSN",
    }


def test_a_project_is_created_with_the_caption_config(ls_client: LabelStudio, caption_project: Any) -> None:
    fetched = ls_client.projects.get(id=caption_project.id)

    assert fetched.title == caption_project.title
    assert fetched.parsed_label_config["caption"]["type"] == "TextArea"
    assert fetched.parsed_label_config["caption"]["to_name"] == ["image"]


def test_uploaded_images_become_tasks_with_relative_upload_urls(
    ls_client: LabelStudio, caption_project: Any, make_pngs: Callable[..., list[Path]], upload_images: Any
) -> None:
    paths = make_pngs(3)

    task_ids = upload_images(caption_project.id, paths)

    tasks = {task.id: task for task in ls_client.tasks.list(project=caption_project.id)}
    assert sorted(tasks) == sorted(task_ids)
    assert len(tasks) == 3
    for task_id, path in zip(task_ids, paths, strict=True):
        image = tasks[task_id].data["image"]
        assert image.startswith(f"/data/upload/{caption_project.id}/"), "relative even though LS has a HOST"
        assert image.endswith(f"-{path.name}")


def test_upload_urls_answer_the_legacy_token_and_refuse_anonymous_requests(
    label_studio: LocalLabelStudio,
    ls_client: LabelStudio,
    caption_project: Any,
    make_pngs: Callable[..., list[Path]],
    upload_images: Any,
) -> None:
    (path,) = make_pngs(1)
    (task_id,) = upload_images(caption_project.id, [path])
    image_url = label_studio.url + ls_client.tasks.get(id=task_id).data["image"]

    with_token = httpx.get(image_url, headers={"Authorization": f"Token {label_studio.legacy_token}"})
    anonymous = httpx.get(image_url)

    assert with_token.status_code == 200
    assert with_token.content == path.read_bytes()
    assert anonymous.status_code == 401


def test_a_personal_access_token_works_only_after_refreshing_it_into_a_bearer_access_token(
    label_studio: LocalLabelStudio,
    ls_pat: str,
    ls_client: LabelStudio,
    caption_project: Any,
    make_pngs: Callable[..., list[Path]],
    upload_images: Any,
) -> None:
    (task_id,) = upload_images(caption_project.id, make_pngs(1))
    image_url = label_studio.url + ls_client.tasks.get(id=task_id).data["image"]

    refreshed = httpx.post(f"{label_studio.url}/api/token/refresh/", json={"refresh": ls_pat})
    access = refreshed.json()["access"]
    with_access = httpx.get(image_url, headers={"Authorization": f"Bearer {access}"})
    with_pat = httpx.get(image_url, headers={"Authorization": f"Bearer {ls_pat}"})
    sdk_with_pat = LabelStudio(base_url=label_studio.url, api_key=ls_pat)

    assert refreshed.status_code == 200
    assert with_access.status_code == 200
    assert with_pat.status_code == 401
    assert label_studio.create_personal_access_token() == ls_pat, "one PAT per user: the instance caches it"
    assert caption_project.id in [p.id for p in sdk_with_pat.projects.list()], "the SDK refreshes a PAT itself"


def test_a_repeated_multipart_field_name_keeps_only_the_last_file(
    ls_http: httpx.Client, caption_project: Any, make_pngs: Callable[..., list[Path]]
) -> None:
    paths = make_pngs(3)
    files = [("files", (path.name, path.read_bytes(), "image/png")) for path in paths]

    response = ls_http.post(f"/api/projects/{caption_project.id}/import", files=files)

    assert response.status_code == 201
    assert response.json()["task_count"] == 1, "why upload_images names its fields file0, file1, ..."


def test_upload_images_sends_more_than_100_files_in_batches(
    ls_client: LabelStudio, caption_project: Any, make_pngs: Callable[..., list[Path]], upload_images: Any
) -> None:
    paths = make_pngs(101, size=(8, 8))

    task_ids = upload_images(caption_project.id, paths)

    assert len(set(task_ids)) == 101
    assert ls_client.projects.get(id=caption_project.id).task_number == 101


def test_local_files_storage_sync_yields_absolute_local_files_urls(
    label_studio: LocalLabelStudio,
    ls_client: LabelStudio,
    caption_project: Any,
    make_pngs: Callable[..., list[Path]],
    sync_local_storage: Any,
) -> None:
    directory = label_studio.files_root / f"project-{caption_project.id}" / "images"
    paths = make_pngs(2, directory=directory)

    storage = sync_local_storage(caption_project.id, directory)

    assert storage.status == "completed", "sync runs inline: no Redis queue in LS OSS"
    tasks = list(ls_client.tasks.list(project=caption_project.id))
    relative = f"project-{caption_project.id}/images"
    expected = {f"{label_studio.url}/data/local-files/?d={relative}/{path.name}": path for path in paths}
    assert {task.data["image"] for task in tasks} == set(expected)
    for url, path in expected.items():
        served = httpx.get(url, headers={"Authorization": f"Token {label_studio.legacy_token}"})
        assert served.status_code == 200
        assert served.content == path.read_bytes()
        assert httpx.get(url).status_code == 401


def test_webhooks_are_delivered_inside_the_api_call_even_with_redis_running(
    ls_client: LabelStudio,
    caption_project: Any,
    make_pngs: Callable[..., list[Path]],
    upload_images: Any,
    http_recorder: HttpRecorder,
) -> None:
    assert redis.Redis(host="localhost", port=6379).ping(), "the point: a Redis server is there for LS to use"
    (task_id,) = upload_images(caption_project.id, make_pngs(1))
    ls_client.webhooks.create(
        project=caption_project.id,
        url=f"{http_recorder.url}/webhook",
        send_payload=True,
        send_for_all_actions=False,
        actions=["ANNOTATION_CREATED"],
        headers={"X-Webhook-Secret": "s3cr3t"},
    )
    result = [{"from_name": "caption", "to_name": "image", "type": "textarea", "value": {"text": ["a cat"]}}]

    annotation = ls_client.annotations.create(id=task_id, result=result)
    received = http_recorder.received("/webhook")  # no waiting: it must already be there

    assert len(received) == 1
    payload = received[0].json()
    assert payload["action"] == "ANNOTATION_CREATED"
    assert set(payload) == {"action", "annotation", "task", "project"}
    assert payload["annotation"]["id"] == annotation.id
    assert payload["annotation"]["result"] == result
    assert payload["task"]["id"] == task_id
    assert received[0].headers["X-Webhook-Secret"] == "s3cr3t"


def test_a_busy_port_is_detected_instead_of_silently_serving_on_the_next_one(
    ls_venv: Path, ls_template: Path, tmp_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        studio = LocalLabelStudio(ls_venv, ls_template, root=tmp_path / "ls", port=busy)

        with pytest.raises(PortMovedError) as caught:
            studio.start()

    assert caught.value.expected == busy
    assert caught.value.actual > busy
    assert "Port" in str(caught.value) and "is in use" in str(caught.value), "the message ends with LS's log"
    assert not studio.running
    assert port_is_free(caught.value.actual), "the server that moved was stopped"


def test_a_second_server_from_the_template_starts_independently_and_stop_frees_its_port(
    ls_venv: Path, ls_template: Path, tmp_path: Path, ls_client: LabelStudio, caption_project: Any
) -> None:
    started = time.monotonic()
    second = LocalLabelStudio(ls_venv, ls_template, root=tmp_path / "second").start()
    print(f"\nsecond Label Studio from the template answered /health in {time.monotonic() - started:.1f} s")
    port, pid = int(second.url.rsplit(":", 1)[1]), second.pid
    try:
        second_client = LabelStudio(base_url=second.url, api_key=second.legacy_token)
        assert list(second_client.projects.list()) == [], "its own database, copied from the user-less template"
        assert caption_project.id in [p.id for p in ls_client.projects.list()]
    finally:
        second.stop()

    assert port_is_free(port)
    assert not second.running
    assert pid is not None and not Path(f"/proc/{pid}").exists()


class DemoServerCli:
    """``python -m ml_backend.studio start|stop`` on one state dir, as ``make demo`` / ``make stop`` run it."""

    def __init__(self, ls_venv: Path, cache: Path, state_dir: Path) -> None:
        self.ls_venv, self.cache, self.state_dir = ls_venv, cache, state_dir

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ml_backend.studio", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)

    def start(self) -> subprocess.CompletedProcess[str]:
        return self.run(
            "start", "--ls-venv", str(self.ls_venv), "--cache", str(self.cache), "--state-dir", str(self.state_dir)
        )

    def stop(self) -> subprocess.CompletedProcess[str]:
        return self.run("stop", "--state-dir", str(self.state_dir))

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.state_dir / "label-studio.json").read_text())
        return state

    def pid(self) -> int:
        return int((self.state_dir / "label-studio.pid").read_text())


@pytest.fixture
def demo_cli(ls_venv: Path, ls_template: Path, tmp_path: Path) -> Iterator[DemoServerCli]:
    cli = DemoServerCli(ls_venv, ls_template.parent, tmp_path / "demo-ls")
    yield cli
    pid_file = cli.state_dir / "label-studio.pid"
    if pid_file.exists() and is_label_studio_process(cli.pid()):  # only if the test failed: leak no server
        os.killpg(cli.pid(), signal.SIGKILL)


def test_the_cli_starts_a_detached_server_that_outlives_it_and_stops_it_by_pid_file(demo_cli: DemoServerCli) -> None:
    started = demo_cli.start()

    assert started.returncode == 0, started.stderr
    state, pid = demo_cli.state(), demo_cli.pid()
    assert state["pid"] == pid
    assert (demo_cli.state_dir / "label-studio.json").stat().st_mode & 0o777 == 0o600, "it holds the token"
    assert state["legacy_token"] not in started.stdout + started.stderr
    assert os.getsid(pid) == pid, "its own session: a Ctrl-C in the starting terminal does not reach it"
    assert httpx.get(f"{state['url']}/health").json() == {"status": "UP"}
    assert "already running" in demo_cli.start().stdout

    stopped = demo_cli.stop()

    assert stopped.returncode == 0, stopped.stderr
    assert "Label Studio stopped" in stopped.stdout
    assert not is_label_studio_process(pid)
    assert not (demo_cli.state_dir / "label-studio.pid").exists()
    assert port_is_free(int(state["url"].rsplit(":", 1)[1]))
    assert "no Label Studio to stop" in demo_cli.stop().stdout


def test_the_cli_restarts_the_detached_server_on_its_data_with_the_same_credentials(demo_cli: DemoServerCli) -> None:
    assert demo_cli.start().returncode == 0
    first = demo_cli.state()
    auth = {"Authorization": f"Token {first['legacy_token']}"}
    created = httpx.post(f"{first['url']}/api/projects/", json={"title": "kept"}, headers=auth)
    assert created.status_code == 201
    assert demo_cli.stop().returncode == 0

    restarted = demo_cli.start()

    assert restarted.returncode == 0, restarted.stderr
    second = demo_cli.state()
    assert second["legacy_token"] == first["legacy_token"]
    assert second["password"] == first["password"]
    projects = httpx.get(f"{second['url']}/api/projects/", headers=auth)
    assert [p["title"] for p in projects.json()["results"]] == ["kept"]
    assert demo_cli.stop().returncode == 0
