"""`labelloop setup` against a real Label Studio and the real backend app: wiring, idempotence, LS's own errors.

- The session's Label Studio (harness fixture ``label_studio``: local backends and webhooks allowed, legacy
  token on) with labelloop's backend app served from a thread: a project is wired, a second run changes nothing
  (the report says so and Label Studio's state is identical), uploads and local-files storage add only new
  images, and every template in label_configs/ is accepted by Label Studio.
- A second Label Studio as a user gets it out of the box (SSRF guard on, ML_BLOCK_LOCAL_IP on, legacy tokens
  disabled for the organization): the legacy token is refused with the explanation, a personal access token
  works, and connecting a backend on 127.0.0.1 fails with the line that names the LS settings to change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from label_studio_sdk import LabelStudio
from werkzeug.serving import make_server

from ml_backend.app import create_app
from ml_backend.cli import main
from ml_backend.cli.setup import run_setup
from ml_backend.projects import WEBHOOK_ACTIONS, WEBHOOK_SECRET_HEADER, SetupError
from ml_backend.settings import Settings
from ml_backend.studio import LocalLabelStudio

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = {"caption", "vqa", "grounding", "marked_screenshot"}
SECRET = "webhook-secret-for-tests"


@pytest.fixture
def serve_backend(
    make_settings: Callable[..., Settings], tiny_model: Callable[..., Path]
) -> Iterator[Callable[..., str]]:
    """``serve_backend(**settings) -> url``: labelloop's backend app (tiny model) on a free port, in a thread."""
    servers: list[Any] = []

    def serve(**overrides: Any) -> str:
        settings = make_settings(model=str(tiny_model("qwen2_vl")), **overrides)
        server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()


@pytest.fixture
def setup_settings(
    make_settings: Callable[..., Settings], label_studio: LocalLabelStudio, serve_backend: Callable[..., str]
) -> Callable[..., Settings]:
    """``setup_settings(**overrides)``: Settings for the session's LS and a running backend that requires basic auth."""
    auth = {"basic_auth_user": "label-studio", "basic_auth_password": "backend-password"}
    backend = serve_backend(ls_url=label_studio.url, ls_api_key=label_studio.legacy_token, **auth)

    def build(**overrides: Any) -> Settings:
        values = {
            "ls_url": label_studio.url,
            "ls_api_key": label_studio.legacy_token,
            "backend_url": backend,
            "webhook_secret": SECRET,
            **auth,
            **overrides,
        }
        return make_settings(**values)

    return build


def snapshot(client: LabelStudio, project_id: int) -> dict[str, Any]:
    """Everything `labelloop setup` may touch in a project, with Label Studio's own ids and timestamps."""
    project = client.projects.get(id=project_id)
    return {
        "project": (project.title, project.label_config, project.show_collab_predictions, project.model_version),
        "tasks": sorted((t.id, str(t.data)) for t in client.tasks.list(project=project_id)),
        # LS re-checks a backend's health whenever backends are listed, which bumps its updated_at by itself
        "ml": [b.model_dump(exclude={"updated_at"}) for b in client.ml.list(project=project_id)],
        "webhooks": [w.model_dump() for w in client.webhooks.list(project=str(project_id))],
        "storages": [s.model_dump() for s in client.import_storage.local.list(project=project_id)],
    }


def test_setup_wires_a_project_and_a_second_run_changes_nothing(
    setup_settings: Callable[..., Settings],
    ls_client: LabelStudio,
    make_pngs: Callable[..., list[Path]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    label_studio: LocalLabelStudio,
) -> None:
    settings = setup_settings()
    images = make_pngs(3)[0].parent
    first = run_setup(settings, "caption", "setup twice", images=images)
    assert first.changed
    project_id = first.project_id
    assert first.project_url == f"{label_studio.url}/projects/{project_id}/data"
    before = snapshot(ls_client, project_id)

    # the wiring
    (backend,) = ls_client.ml.list(project=project_id)
    assert (backend.url, backend.title, backend.state) == (settings.backend_url, "labelloop", "CO")
    assert (backend.auth_method, backend.basic_auth_user) == ("BASIC_AUTH", "label-studio")  # LS reached /setup with it
    assert backend.model_version.endswith("@base")
    (hook,) = ls_client.webhooks.list(project=str(project_id))  # LS's own header-less webhook was replaced
    assert hook.url == f"{settings.backend_url}/webhook"
    assert hook.headers == {WEBHOOK_SECRET_HEADER: SECRET}
    assert (hook.send_payload, hook.send_for_all_actions, sorted(hook.actions)) == (True, False, list(WEBHOOK_ACTIONS))
    assert before["project"][2:] == (True, "labelloop")  # predictions are asked from the live backend
    assert len(before["tasks"]) == 3

    # the second run, through the command line as a user types it
    for key, value in {
        "LABELLOOP_LS_URL": label_studio.url,
        "LABELLOOP_LS_API_KEY": label_studio.legacy_token,
        "LABELLOOP_BACKEND_URL": settings.backend_url,
        "LABELLOOP_WEBHOOK_SECRET": SECRET,
        "LABELLOOP_BASIC_AUTH_USER": "label-studio",
        "LABELLOOP_BASIC_AUTH_PASSWORD": "backend-password",
        "LABELLOOP_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(key, value)
    main(["setup", "--template", "caption", "--title", "setup twice", "--images", str(images)])
    assert capsys.readouterr().out.splitlines() == [
        f"project 'setup twice': unchanged (id {project_id})",
        "label config: unchanged",
        f"ML backend {settings.backend_url}: unchanged (model version {backend.model_version})",
        f"webhook {settings.backend_url}/webhook: unchanged (secret header {WEBHOOK_SECRET_HEADER})",
        "predictions shown to annotators: unchanged",
        f"images from {images}: unchanged (all 3 already uploaded)",
        "nothing changed",
        f"project: {label_studio.url}/projects/{project_id}/data",
    ]
    assert snapshot(ls_client, project_id) == before


def test_setup_adds_only_new_images_by_upload_and_by_local_files_storage(
    setup_settings: Callable[..., Settings],
    ls_client: LabelStudio,
    make_pngs: Callable[..., list[Path]],
    label_studio: LocalLabelStudio,
) -> None:
    settings = setup_settings(ls_local_files_root=label_studio.files_root)
    shared = label_studio.files_root / "setup-images"
    shared.mkdir()  # empty at first, as in the compose stack before images are added
    empty = run_setup(settings, "caption", "setup local files", images=shared)
    assert empty.steps[-1].line() == f"local-files storage {shared}: created (0 new tasks, 0 image files)"
    assert empty.notes == [
        f"no image files (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp) in {shared} yet: add some and run "
        "setup again"
    ]
    make_pngs(2, directory=shared)
    first = run_setup(settings, "caption", "setup local files", images=shared)
    assert first.steps[-1].line() == f"local-files storage {shared}: updated (2 new tasks, 2 image files)"
    tasks = list(ls_client.tasks.list(project=first.project_id))
    assert sorted(t.data["image"] for t in tasks) == [
        f"{label_studio.url}/data/local-files/?d=setup-images/img0.png",
        f"{label_studio.url}/data/local-files/?d=setup-images/img1.png",
    ]
    make_pngs(1, directory=shared, prefix="new")
    again = run_setup(settings, "caption", "setup local files", images=shared)
    assert again.steps[-1].line() == f"local-files storage {shared}: updated (1 new task, 3 image files)"
    assert not run_setup(settings, "caption", "setup local files", images=shared).changed

    elsewhere = make_pngs(101)[0].parent  # not under LS's files root: uploaded, in two requests
    uploaded = run_setup(settings, "caption", "setup uploads", images=elsewhere)
    assert uploaded.steps[-1].line() == f"images from {elsewhere}: updated (101 uploaded, 0 already present)"
    make_pngs(1, directory=elsewhere, prefix="late")
    assert run_setup(settings, "caption", "setup uploads", images=elsewhere).steps[-1].line() == (
        f"images from {elsewhere}: updated (1 uploaded, 101 already present)"
    )
    assert len(list(ls_client.tasks.list(project=uploaded.project_id))) == 102


def test_every_template_is_a_label_config_label_studio_accepts(
    setup_settings: Callable[..., Settings], ls_client: LabelStudio
) -> None:
    from label_studio_sdk.label_interface import LabelInterface

    found = {path.stem: path for path in (REPO / "label_configs").glob("*.xml")}
    assert set(found) == TEMPLATES
    settings = setup_settings()
    for name, path in sorted(found.items()):
        report = run_setup(settings, str(path), f"template {name}")
        project = ls_client.projects.get(id=report.project_id)
        assert project.label_config == path.read_text(encoding="utf-8").strip()  # LS strips the last newline
        controls = {control.name for control in LabelInterface(path.read_text(encoding="utf-8")).controls}
        assert set(project.parsed_label_config) == controls, name
        assert "review" in controls, f"{name}: no review (accept/reject) control"


# --- Label Studio with its default protections ----------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_studio(
    ls_venv: Path, ls_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalLabelStudio, str]]:
    """A Label Studio with the SSRF guard and ML_BLOCK_LOCAL_IP on and legacy tokens disabled; and its admin's PAT."""
    studio = LocalLabelStudio(
        ls_venv,
        ls_template,
        root=tmp_path_factory.mktemp("guarded-ls"),
        extra_env={"LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "true", "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "true"},
    )
    studio.start()
    try:
        pat = studio.create_personal_access_token()
        access = httpx.post(f"{studio.url}/api/token/refresh/", json={"refresh": pat}, timeout=30).json()["access"]
        disabled = httpx.post(
            f"{studio.url}/api/jwt/settings",
            headers={"Authorization": f"Bearer {access}"},
            json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": False},
            timeout=30,
        )
        assert disabled.status_code == 200, disabled.text
        yield studio, pat
    finally:
        studio.stop()


def test_label_studio_defaults_get_one_line_errors_that_name_the_fix(
    guarded_studio: tuple[LocalLabelStudio, str],
    serve_backend: Callable[..., str],
    make_settings: Callable[..., Settings],
) -> None:
    studio, pat = guarded_studio
    backend = serve_backend(ls_url=studio.url, ls_api_key=pat)
    settings = make_settings(ls_url=studio.url, ls_api_key=studio.legacy_token, backend_url=backend)
    with pytest.raises(SetupError) as legacy:
        run_setup(settings, "caption", "guarded")
    assert str(legacy.value) == (
        f"Label Studio at {studio.url} refused LABELLOOP_LS_API_KEY: legacy tokens are disabled for this "
        "organization; use a personal access token (Account & Settings > Personal Access Token) or enable legacy "
        "tokens (Organization > API Tokens Settings)"
    )

    with_pat = make_settings(ls_url=studio.url, ls_api_key=pat, backend_url=backend, webhook_secret=SECRET)
    with pytest.raises(SetupError) as blocked:
        run_setup(with_pat, "caption", "guarded")
    assert str(blocked.value) == (
        f"Label Studio refused to connect the backend at {backend}: URL resolves to a reserved network address "
        "(block: 127.0.0.0/8); start Label Studio with LABEL_STUDIO_SSRF_PROTECTION_ENABLED=false (webhooks) and "
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP=false (ML backends), or set LABELLOOP_BACKEND_URL to an address it is "
        "allowed to reach"
    )
