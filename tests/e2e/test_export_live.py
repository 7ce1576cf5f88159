"""The exporter against a real Label Studio: SDK paging, uploads and local files fetched with a refreshed Bearer
token (or read from LS's media dir), the review gate, predictions left out, and `labelloop export --project`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from label_studio_sdk import LabelStudio
from pydantic import SecretStr

from converters.boxes import Box
from converters.export import ExportOptions, export_tasks
from converters.label_config import parse_label_config
from converters.media import MediaConfig
from converters.samples import LabelStudioExport
from converters.tasks import ProjectSource
from ml_backend.cli import main
from ml_backend.studio import LocalLabelStudio

pytestmark = pytest.mark.e2e

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image" maxSubmissions="1"/>
  <RectangleLabels name="objects" toName="image"><Label value="thing"/><Label value="redact"/></RectangleLabels>
  <Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices>
</View>"""


@pytest.fixture
def labelled_project(
    ls_client: LabelStudio,
    label_studio: LocalLabelStudio,
    make_pngs: Callable[..., list[Path]],
    upload_images: Callable[[int, list[Path]], list[int]],
    sync_local_storage: Callable[..., Any],
    request: pytest.FixtureRequest,
) -> dict[str, Any]:
    """A project with 5 tasks (3 uploads, 2 local files): 3 accepted, 1 rejected, 1 cancelled, 1 prediction."""
    project = ls_client.projects.create(title=request.node.name[:50], label_config=CONFIG)
    uploads = upload_images(project.id, make_pngs(3, size=(64, 48), prefix="up"))
    folder = label_studio.files_root / f"export-{project.id}"
    make_pngs(2, directory=folder, size=(80, 60), prefix="local")
    sync_local_storage(project.id, folder)
    tasks = sorted(ls_client.tasks.list(project=project.id, fields="all"), key=lambda task: task.id)
    assert len(tasks) == 5
    ls = LabelStudioExport()
    verdicts = ["accept", "accept", "reject", "accept", None]
    for task, verdict in zip(tasks, verdicts, strict=True):
        width = 64 + uploads.index(task.id) if task.id in uploads else 80 + (task.id - tasks[3].id)
        height = 48 if task.id in uploads else 60
        result = [
            ls.textarea("caption", f"Task {task.id}, a plain coloured picture."),
            ls.rectangle("objects", Box(8, 8, 40, 32), width, height, ["thing"]),
        ]
        if verdict is not None:
            result.append(ls.choice("review", verdict))
        ls_client.annotations.create(id=task.id, result=result, was_cancelled=verdict is None)
    ls_client.predictions.create(
        task=tasks[0].id, result=[ls.textarea("caption", "a model's caption")], model_version="m1"
    )
    return {"project": project, "tasks": tasks}


def test_a_live_project_exports_through_the_sdk_with_a_personal_access_token(
    ls_client: LabelStudio,
    label_studio: LocalLabelStudio,
    ls_pat: str,
    labelled_project: dict[str, Any],
    tmp_path: Path,
) -> None:
    project, tasks = labelled_project["project"], labelled_project["tasks"]
    source = ProjectSource(ls_client, project.id, page_size=2)  # three pages
    config = parse_label_config(source.label_config())
    media = MediaConfig(ls_url=label_studio.url, api_key=SecretStr(ls_pat))  # images over HTTP, Bearer token
    options = ExportOptions(workers=1, near_dup_distance=None)  # flat test images all share one perceptual hash
    report = export_tasks(source, config, tmp_path / "out", options=options, media=media)
    assert (report.tasks_in, report.tasks_written) == (5, 3)
    assert report.dropped_by_reason == {"not_accepted": 1, "cancelled": 1}
    rows = [json.loads(line) for split in ("train", "val") for line in (tmp_path / "out" / f"{split}.jsonl").open()]
    assert sorted({row["labelloop"]["task_id"] for row in rows}) == [tasks[0].id, tasks[1].id, tasks[3].id]
    sources = {row["labelloop"]["source"] for row in rows}
    assert any("/data/upload/" in s for s in sources) and any("/data/local-files/?d=" in s for s in sources)
    assert "a model's caption" not in json.dumps(rows)
    grounding = [row for row in rows if "objects" in row]
    assert all(row["objects"]["bbox"] == [[8, 8, 40, 32]] for row in grounding)


def test_labelloop_export_project_reads_uploads_from_the_media_dir(
    label_studio: LocalLabelStudio,
    labelled_project: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = labelled_project["project"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABELLOOP_LS_URL", label_studio.url)
    monkeypatch.setenv("LABELLOOP_LS_API_KEY", label_studio.legacy_token)
    monkeypatch.setenv("LABELLOOP_LS_MEDIA_DIR", str(label_studio.data_dir / "media"))
    monkeypatch.setenv("LABELLOOP_LS_LOCAL_FILES_ROOT", str(label_studio.files_root))
    out = tmp_path / "cli"
    main(
        [
            "export",
            "--project",
            str(project.id),
            "--out",
            str(out),
            "--workers",
            "2",
            "--quiet",
            "--near-dup-distance",
            "-1",
        ]
    )
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("5 tasks in: 3 written (")
    assert "dropped      1  not_accepted" in printed and "dropped      1  cancelled" in printed
