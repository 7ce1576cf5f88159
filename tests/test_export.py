"""The export pipeline end to end: the sample project, every task accounted for, bad inputs, the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from converters.boxes import Box
from converters.errors import ConvertError, ExportInvariantError
from converters.export import ExportOptions, export_tasks
from converters.label_config import LabelConfig, parse_label_config
from converters.media import MediaConfig
from converters.report import ExportReport
from converters.samples import LabelStudioExport, SampleProject, draw_shapes, encode, write_sample_project
from converters.tasks import ExportFile
from ml_backend.cli import main


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleProject:
    return write_sample_project(tmp_path_factory.mktemp("sample") / "project")


def sample_media(project: SampleProject) -> MediaConfig:
    return MediaConfig(media_dir=project.media_dir, local_files_root=project.local_files_root)


def sample_config(project: SampleProject) -> LabelConfig:
    return parse_label_config(project.label_config.read_text())


@pytest.fixture(scope="module")
def exported(sample: SampleProject, tmp_path_factory: pytest.TempPathFactory) -> tuple[ExportReport, Path]:
    out = tmp_path_factory.mktemp("export") / "out"
    report = export_tasks(
        ExportFile(sample.export), sample_config(sample), out,
        options=ExportOptions(workers=1), media=sample_media(sample),
    )  # fmt: skip
    return report, out


def read_rows(out: Path, split: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_every_task_of_the_sample_is_written_or_dropped_with_its_reason(
    sample: SampleProject, exported: tuple[ExportReport, Path]
) -> None:
    report, out = exported
    assert report.tasks_in == sample.tasks == 42
    assert report.dropped_by_reason == sample.expected_drops
    assert report.tasks_written == sample.expected_written
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    written_ids = {row["labelloop"]["task_id"] for split in ("train", "val") for row in read_rows(out, split)}
    dropped_ids = {entry["task_id"] for entry in dropped}
    all_ids = {task["id"] for task in json.loads(sample.export.read_text())}
    assert written_ids | dropped_ids == all_ids and not written_ids & dropped_ids
    assert len(written_ids) == report.tasks_written and len(dropped) == report.tasks_dropped
    assert {entry["reason"] for entry in dropped} == set(sample.expected_drops)
    assert all(entry["message"].startswith(f"task {entry['task_id']}: ") for entry in dropped)


def test_rows_point_at_written_images_and_no_image_is_in_both_splits(exported: tuple[ExportReport, Path]) -> None:
    report, out = exported
    train, val = read_rows(out, "train"), read_rows(out, "val")
    assert (len(train), len(val)) == (report.rows["train"], report.rows["val"])
    assert train and val
    for row in train + val:
        (path,) = row["images"]
        assert Path(path).is_absolute() and Path(path).is_file()
        assert Path(path).name.startswith(row["labelloop"]["image_sha256"])
        assert row["messages"][0]["content"].startswith("<image>")
    train_images = {row["images"][0] for row in train}
    val_images = {row["images"][0] for row in val}
    assert not train_images & val_images
    on_disk = {str(path.resolve()) for path in (out / "images").iterdir() if path.is_file()}
    assert on_disk == train_images | val_images  # the duplicates' and dropped tasks' files are gone
    assert report.images_written == len(on_disk)


def test_the_sample_exercises_every_kind_and_cleaning_step(exported: tuple[ExportReport, Path]) -> None:
    report, out = exported
    assert set(report.rows_by_kind) == {"caption", "vqa", "marked", "grounding", "choices"}
    assert report.converted_modes == {"CMYK": 1, "P": 1, "RGBA": 1, "L": 1}
    for step in ("exif_transposed", "resized", "redacted_regions", "rotated_boxes", "clipped_boxes",
                 "exact_duplicates", "near_duplicates"):  # fmt: skip
        assert report.cleaning.get(step, 0) >= 1, step
    assert report.labels["objects"]["marks"] == 4 and "redact" not in report.labels["objects"]
    texts = [m["content"] for split in ("train", "val") for row in read_rows(out, split) for m in row["messages"]]
    assert "A red shape on a background(textured)." in texts  # full-width folded
    assert "一个彩色的形状，背景有纹理。" in texts  # CJK punctuation kept
    assert "An older caption that a later annotation replaces." not in texts
    assert "a fixed caption" not in texts  # predictions are never labels
    assert "一个彩色的形状" in (out / "train.jsonl").read_text(encoding="utf-8") + (out / "val.jsonl").read_text(
        encoding="utf-8"
    )


def test_the_report_files_are_written(exported: tuple[ExportReport, Path]) -> None:
    report, out = exported
    saved = ExportReport.model_validate_json((out / "report.json").read_text())
    assert saved.tasks_in == report.tasks_in and saved.dropped_by_reason == report.dropped_by_reason
    html = (out / "report.html").read_text()
    assert "<td>tasks dropped</td><td>9</td>" in html and "image_truncated" in html
    thumbs = sorted((out / "images" / "thumbs").iterdir())
    assert len(thumbs) == report.tasks_written  # fewer written tasks than the sample size: all drawn
    assert all(f'src="images/thumbs/{thumb.name}"' in html for thumb in thumbs)


def test_a_process_pool_gives_the_same_export(
    sample: SampleProject, exported: tuple[ExportReport, Path], tmp_path: Path
) -> None:
    report, out = exported
    again = export_tasks(
        ExportFile(sample.export), sample_config(sample), tmp_path / "pool",
        options=ExportOptions(workers=2), media=sample_media(sample),
    )  # fmt: skip
    assert again.model_dump(exclude={"seconds", "out_dir", "files", "options"}) == report.model_dump(
        exclude={"seconds", "out_dir", "files", "options"}
    )
    for split in ("train", "val"):
        mine = (out / f"{split}.jsonl").read_text().replace(str(out.resolve()), "OUT")
        theirs = (tmp_path / "pool" / f"{split}.jsonl").read_text().replace(str((tmp_path / "pool").resolve()), "OUT")
        assert mine == theirs


def test_an_existing_export_is_not_overwritten_by_accident(
    sample: SampleProject, exported: tuple[ExportReport, Path]
) -> None:
    _, out = exported
    with pytest.raises(ConvertError) as info:
        export_tasks([], sample_config(sample), out)
    assert str(info.value) == (
        f"{out} already holds an export (train.jsonl, val.jsonl, report.json); choose another directory or overwrite it"
    )


# --- bad inputs, one task at a time next to a good one ---------------------------------------------------

CONFIG = parse_label_config(
    '<View><Image name="image" value="$image"/><TextArea name="caption" toName="image"/>'
    '<RectangleLabels name="objects" toName="image"><Label value="cat"/><Label value="redact"/></RectangleLabels>'
    '<Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices></View>'
)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    folder = root / "media" / "upload" / "1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for name, size in (("good.png", (400, 300)), ("other.jpg", (640, 480))):
        image, _ = draw_shapes(*size, rng)
        (folder / name).write_bytes(encode(image, "PNG" if name.endswith("png") else "JPEG"))
    (folder / "big.png").write_bytes(encode(Image.new("RGB", (3000, 2000), (90, 120, 200)), "PNG"))
    (folder / "text.png").write_bytes(b"just text, not an image")
    return root / "media"


def accepted(ls: LabelStudioExport, *result: dict[str, Any]) -> dict[str, Any]:
    return ls.annotation([*result, ls.choice("review", "accept")])


def good_task(ls: LabelStudioExport) -> dict[str, Any]:
    return ls.task({"image": "/data/upload/1/good.png"}, [accepted(ls, ls.textarea("caption", "A good picture."))])


def run(
    tmp_path: Path, media_dir: Path, tasks: Sequence[Any], **options: Any
) -> tuple[ExportReport, list[dict[str, Any]]]:
    out = tmp_path / "out"
    report = export_tasks(
        tasks,
        CONFIG,
        out,
        options=ExportOptions(workers=1, thumbnails=0, **options),
        media=MediaConfig(media_dir=media_dir),
    )
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert report.tasks_in == report.tasks_written + report.tasks_dropped == len(tasks)
    return report, dropped


def test_overwriting_an_export_leaves_none_of_its_images(tmp_path: Path, media_dir: Path) -> None:
    ls = LabelStudioExport()
    first, _ = run(tmp_path, media_dir, [good_task(ls)])
    (tmp_path / "out" / "images" / "notes.txt").write_text("not ours")
    other = ls.task({"image": "/data/upload/1/other.jpg"}, [accepted(ls, ls.textarea("caption", "Another one."))])
    second, _ = run(tmp_path, media_dir, [other], overwrite=True)
    names = sorted(path.name for path in (tmp_path / "out" / "images").iterdir() if path.is_file())
    assert len(names) == 2 and names[0].endswith(".jpg") and names[1] == "notes.txt"
    assert (first.images_written, second.images_written) == (1, 1)


@pytest.mark.parametrize(
    ("make", "options", "reason", "message"),
    [
        (lambda ls: ls.task({"image": "/data/upload/1/gone.png"}, [accepted(ls, ls.textarea("caption", "Lost."))]), {},
         "image_missing", "task 2: image /data/upload/1/gone.png: file not found ({media}/upload/1/gone.png)"),
        (lambda ls: ls.task({"picture": "/data/upload/1/good.png"}, [accepted(ls, ls.textarea("caption", "Wrong key."))]), {},
         "image_missing", "task 2: data.image: missing"),
        (lambda ls: ls.task({"image": "/data/upload/1/text.png"}, [accepted(ls, ls.textarea("caption", "Text file."))]), {},
         "image_not_an_image", "task 2: image /data/upload/1/text.png: not an image (Pillow cannot identify it)"),
        (lambda ls: ls.task({"image": "/data/upload/1/big.png"}, [accepted(ls, ls.textarea("caption", "Too big."))]), {"max_image_pixels": 5_000_000},
         "image_too_large", "task 2: image /data/upload/1/big.png: 3000x2000 = 6,000,000 pixels is more than max_image_pixels (5,000,000); decompression-bomb guard"),
        (lambda ls: ls.task({"image": "/data/upload/1/other.jpg"}, [accepted(ls, ls.textarea("caption", "\t \n"))]), {},
         "empty_text", "task 2: annotations[0].result[0].value.text: empty caption"),
        (lambda ls: ls.task({"image": "/data/upload/1/other.jpg"}, [accepted(ls, ls.textarea("colour", "red"))]), {},
         "unknown_control", "task 2: annotations[0].result[0].from_name: 'colour' is not a control of the label config (controls: caption, objects, review)"),
        (lambda ls: ls.task({"image": "/data/upload/1/other.jpg"}, [accepted(ls, ls.rectangle("objects", Box(700, 10, 800, 90), 640, 480, ["cat"]))]), {},
         "box_outside", "task 2: annotations[0].result[0].value: box [700, 10, 800, 90] lies outside the 640x480 image; dropped"),
        (lambda ls: {**ls.task({"image": "/data/upload/1/other.jpg"}), "data": "other.jpg"}, {},
         "invalid_task", "task 2: data: expected an object, got 'other.jpg'"),
        (lambda ls: {"data": {"image": "/data/upload/1/other.jpg"}}, {},
         "invalid_task", "task #2 in the export: id: expected an integer, got None"),
        (lambda ls: ls.task({"image": "/data/upload/1/other.jpg"}, [ls.annotation([ls.textarea("caption", "Rejected."), ls.choice("review", "reject")])]), {},
         "not_accepted", "task 2: no accepted annotation (1 review=reject)"),
    ],
)  # fmt: skip
def test_a_bad_task_is_dropped_with_a_message_naming_task_and_field(
    tmp_path: Path, media_dir: Path, make: Any, options: dict[str, Any], reason: str, message: str
) -> None:
    ls = LabelStudioExport()
    tasks = [good_task(ls), make(ls)]
    report, dropped = run(tmp_path, media_dir, tasks, **options)
    assert report.tasks_written == 1
    assert [(entry["reason"], entry["message"]) for entry in dropped] == [(reason, message.format(media=media_dir))]


def test_rotated_boxes_unicode_and_stray_controls_still_export(tmp_path: Path, media_dir: Path) -> None:
    ls = LabelStudioExport()
    task = ls.task(
        {"image": "/data/upload/1/other.jpg"},
        [accepted(
            ls,
            ls.textarea("caption", "Ｃａｆé au lait ☕ — 猫が座っている。"),
            ls.rectangle("objects", Box(100, 100, 300, 200), 640, 480, ["cat"], rotation=30),
            ls.rectangle("objects", Box(400, 300, 500, 400), 640, 480, ["redact"]),
            ls.textarea("colour", "red"),
        )],
    )  # fmt: skip
    report, dropped = run(tmp_path, media_dir, [task])
    assert report.tasks_written == 1 and dropped == []
    assert report.cleaning["rotated_boxes"] == 1 and report.cleaning["redacted_regions"] == 1
    assert report.notes_by_code == {"unknown_control": 1}
    lines = (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8") + (tmp_path / "out" / "val.jsonl").read_text(
        encoding="utf-8"
    )
    assert "Café au lait ☕ — 猫が座っている。" in lines  # full-width letters folded, CJK punctuation kept
    grounding = next(json.loads(line) for line in lines.splitlines() if "objects" in json.loads(line))
    assert grounding["objects"]["ref"] == ["cat"]  # the redacted region is no row


def test_malformed_json_fails_before_anything_is_written(tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text('[{"id": 1, "data": {"image": "a.png"}}, {"id": 2, "data": ')
    with pytest.raises(ConvertError) as info:
        export_tasks(ExportFile(export), CONFIG, tmp_path / "out")
    assert str(info.value) == f"{export}: malformed JSON after task 2: parse error: premature EOF"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["dropped.jsonl", "images"]


def test_the_invariant_is_checked() -> None:
    report = ExportReport(source="x", out_dir="y", tasks_in=3, tasks_written=1, tasks_dropped=1)
    with pytest.raises(ExportInvariantError) as info:
        report.check()
    assert str(info.value) == "export lost track of tasks: 3 in, 1 written, 1 dropped"


class FixedMarks:
    """A stand-in for the screenshot-mark detector: one mark in the top-left quarter of every image."""

    def __call__(self, image: Image.Image) -> list[Box]:
        return [Box(0, 0, image.width / 4, image.height / 4)]


def test_a_mark_detector_runs_in_the_workers_and_labels_marks(tmp_path: Path, media_dir: Path) -> None:
    config = parse_label_config(
        '<View><Image name="image" value="$image"/><TextArea name="description" toName="image"/>'
        '<RectangleLabels name="regions" toName="image"><Label value="marks"/></RectangleLabels></View>'
    )
    ls = LabelStudioExport()
    tasks = [ls.task({"image": "/data/upload/1/other.jpg"}, [ls.annotation([ls.textarea("description", "The cat.")])])]
    options = ExportOptions(workers=2, thumbnails=0, mark_detector=FixedMarks())
    report = export_tasks(tasks, config, tmp_path / "out", options=options, media=MediaConfig(media_dir=media_dir))
    assert report.rows_by_kind == {"marked": 1, "grounding": 1}
    rows = read_rows(tmp_path / "out", "train") + read_rows(tmp_path / "out", "val")
    grounding = next(row for row in rows if "objects" in row)
    assert grounding["objects"] == {"ref": ["marks"], "bbox": [[0, 0, 160, 120]], "bbox_type": "real"}
    assert report.cleaning["detected_marks"] == 1
    assert "mark_detector" not in report.options


def test_memory_stays_flat_because_dropped_tasks_stream_to_disk(tmp_path: Path, media_dir: Path) -> None:
    ls = LabelStudioExport()
    tasks = [
        ls.task({"image": "/data/upload/1/gone.png"}, [accepted(ls, ls.textarea("caption", "x" * 5))])
        for _ in range(450)
    ]
    report, dropped = run(tmp_path, media_dir, tasks)
    assert len(dropped) == 450 and len(report.dropped_examples) == 200


# --- the CLI -------------------------------------------------------------------------------------------------


def test_the_cli_exports_the_sample_project(
    sample: SampleProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    main([
        "export", "--input", str(sample.export), "--label-config", str(sample.label_config),
        "--media-dir", str(sample.media_dir), "--local-files-root", str(sample.local_files_root),
        "--out", str(out), "--workers", "1", "--quiet", "--vqa-mode", "per_pair", "--near-dup-distance", "-1",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("42 tasks in: 34 written (")
    assert "dropped      1  exact_duplicate" in printed and "near_duplicate" not in printed
    report = json.loads((out / "report.json").read_text())
    assert report["options"]["vqa_mode"] == "per_pair" and report["options"]["near_dup_distance"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "--out", "x"], "Error: give either --input FILE (with --label-config) or --project ID"),
        (["export", "--input", "e.json", "--project", "3", "--out", "x"], "Error: give either --input FILE (with --label-config) or --project ID"),
        (["export", "--input", "e.json", "--out", "x"], "Error: --input needs --label-config (the project's label config XML)"),
        (["export", "--project", "3", "--out", "x"], "labelloop: error: --project needs LABELLOOP_LS_URL and LABELLOOP_LS_API_KEY"),
        (["export", "--input", "e.json", "--label-config", "missing.xml", "--out", "x"], "labelloop: error: --label-config: cannot read missing.xml: No such file or directory"),
    ],
)  # fmt: skip
def test_cli_mistakes_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], message: str) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_sample_project_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["sample-project", str(tmp_path / "p")])
    assert capsys.readouterr().out.startswith(f"42 tasks: {tmp_path / 'p' / 'export.json'}")
    assert (tmp_path / "p" / "label_config.xml").is_file()
