"""The marks detector in the exporter, end to end: marked screenshots -> visual-prompt rows, rows that box the marks,
rows that point the note at the marked places (on the clean original, or an ``--unmark`` copy), near-duplicate
screenshots marked differently, the CLI, and the JSONL encoded by ms-swift's Qwen2-VL template."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from marks_conftest_helpers import arrow, ellipse, label, page, rectangle
from PIL import Image

from converters.boxes import Box
from converters.export import ExportOptions, export_tasks
from converters.label_config import LabelConfig, parse_label_config
from converters.marks import detect_marks
from converters.marks.adapter import DetectedMark, MarksDetector
from converters.marks.model import iou
from converters.media import MediaConfig
from converters.report import ExportReport
from converters.samples import LabelStudioExport, encode
from ml_backend.cli import main

REPO = Path(__file__).resolve().parent.parent
CONFIG_XML = (REPO / "label_configs" / "marked_screenshot.xml").read_text()
CONFIG = parse_label_config(CONFIG_XML)
BOX = (100, 60, 400, 170)  # the red rectangle's outer bound
TIP, TAIL = (420, 260), (600, 420)  # the arrow
OVAL = (440, 40, 690, 200)
NOTE = "The total in the second line is wrong."
REFER = "Where on this screenshot is what this note is about: <ref-object>? Give the box of each place."


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LS media dir with: a clean screen, it marked (box + label + arrow), it marked differently (ellipse)."""
    root = tmp_path_factory.mktemp("marks-media")
    upload = root / "upload" / "1"
    upload.mkdir(parents=True)
    clean = page()
    marked, _ = label(rectangle(clean, BOX, width=3), (410, 100), "total?")
    marked = arrow(marked, TAIL, TIP, width=4)
    other = ellipse(clean, OVAL, "#0000ff", width=3)
    for name, image in (("clean.png", clean), ("marked.png", marked), ("other.png", other)):
        (upload / name).write_bytes(encode(image, "PNG"))
    return root


def task(ls: LabelStudioExport, note: str = NOTE, image: str = "marked.png", **data: str) -> dict[str, Any]:
    result = [ls.textarea("description", note), ls.choice("review", "accept")]
    return ls.task({"image": f"/data/upload/1/{image}", **data}, [ls.annotation(result)])


def export(tmp: Path, media: Path, tasks: list[dict[str, Any]], config: LabelConfig = CONFIG,
           **options: Any) -> tuple[ExportReport, list[dict[str, Any]]]:  # fmt: skip
    defaults: dict[str, Any] = {"workers": 1, "thumbnails": 0, "val_fraction": 0.0}
    opts = ExportOptions(**{**defaults, **options})
    report = export_tasks(tasks, config, tmp / "out", options=opts, media=MediaConfig(media_dir=media))
    rows = [
        json.loads(line)
        for split in ("train", "val")
        for line in (tmp / "out" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return report, rows


def refer_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if "objects" in row and set(row["objects"]["ref"]) != {"marks"}]


def marks_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    (row,) = [row for row in rows if "objects" in row and set(row["objects"]["ref"]) == {"marks"}]
    return row


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.int16)


def test_a_marked_screenshot_gives_the_visual_prompt_row_and_rows_from_the_detector(
    tmp_path: Path, media: Path
) -> None:
    report, rows = export(tmp_path, media, [task(LabelStudioExport())], mark_detector=MarksDetector(),
                          refer_marks=True)  # fmt: skip
    assert report.rows_by_kind == {"marked": 1, "grounding": 2}
    marked = next(row for row in rows if row["labelloop"]["kind"] == "marked")
    assert marked["messages"][1] == {"role": "assistant", "content": NOTE}
    image = marked["images"][0]
    # the marks themselves, boxed on the marked image: the rectangle, its label and the arrow
    boxes = marks_row(rows)["objects"]["bbox"]
    assert len(boxes) == 3 and marks_row(rows)["images"] == [image]
    assert max(iou(tuple(b), BOX) for b in boxes) >= 0.85
    # the note pointed at the places the marks point out: the box, and what lies past the arrow's tip
    (refer,) = refer_rows(rows)
    assert refer["images"] == [image]  # no clean copy: the marked image
    assert refer["messages"] == [
        {"role": "user", "content": "<image>" + REFER},
        {"role": "assistant", "content": "<bbox>\n<bbox>"},
    ]
    assert refer["objects"]["ref"] == [NOTE]
    rect, near_tip = refer["objects"]["bbox"]
    assert iou(tuple(rect), BOX) >= 0.85
    assert near_tip[0] < TIP[0] < near_tip[2] and near_tip[1] < TIP[1] < near_tip[3]
    assert report.cleaning["detected_marks"] == 3 and report.cleaning["mark_reference_rows"] == 1


def test_with_the_unmarked_original_the_note_is_pointed_at_on_the_clean_image(tmp_path: Path, media: Path) -> None:
    tasks = [task(LabelStudioExport(), original="/data/upload/1/clean.png")]
    report, rows = export(tmp_path, media, tasks, mark_detector=MarksDetector(), refer_marks=True)
    (refer,) = refer_rows(rows)
    marked = next(row for row in rows if row["labelloop"]["kind"] == "marked")
    assert refer["images"] != marked["images"] and marks_row(rows)["images"] == marked["images"]
    clean = pixels(refer["images"][0])
    assert np.array_equal(clean, np.asarray(page(), np.int16))  # the original, as written
    assert detect_marks(clean.astype(np.uint8)) == []
    assert iou(tuple(refer["objects"]["bbox"][0]), BOX) >= 0.85
    assert report.cleaning["clean_copies_original"] == 1
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 2


def test_a_missing_original_falls_back_to_the_marked_image_with_a_note(tmp_path: Path, media: Path) -> None:
    tasks = [task(LabelStudioExport(), original="/data/upload/1/gone.png")]
    report, rows = export(tmp_path, media, tasks, mark_detector=MarksDetector(), refer_marks=True)
    (refer,) = refer_rows(rows)
    assert refer["images"] == marks_row(rows)["images"]
    assert report.cleaning["originals_unreadable"] == 1 and report.notes_by_code["original_unreadable"] == 1


def test_unmark_inpaints_the_marks_for_the_clean_copy(tmp_path: Path, media: Path) -> None:
    report, rows = export(tmp_path, media, [task(LabelStudioExport())], mark_detector=MarksDetector(),
                          refer_marks=True, unmark=True)  # fmt: skip
    (refer,) = refer_rows(rows)
    copy, marked = pixels(refer["images"][0]), pixels(marks_row(rows)["images"][0])
    truth = np.asarray(page(), np.int16)
    assert detect_marks(copy.astype(np.uint8)) == []
    assert np.abs(copy - truth).mean() < 0.4 * np.abs(marked - truth).mean()
    assert report.cleaning["clean_copies_unmarked"] == 1


def test_without_refer_marks_the_export_is_as_before(tmp_path: Path, media: Path) -> None:
    report, rows = export(tmp_path, media, [task(LabelStudioExport(), original="/data/upload/1/clean.png")],
                          mark_detector=MarksDetector(), unmark=True)  # fmt: skip
    assert report.rows_by_kind == {"marked": 1, "grounding": 1} and refer_rows(rows) == []
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 1  # no clean copy fetched or made


def test_a_persons_marks_boxes_are_what_the_note_points_at(tmp_path: Path, media: Path) -> None:
    ls = LabelStudioExport()
    drawn = Box(300, 200, 500, 300)
    result = [
        ls.textarea("description", NOTE),
        ls.rectangle("regions", drawn, 720, 480, ["marks"]),
        ls.choice("review", "accept"),
    ]
    tasks = [ls.task({"image": "/data/upload/1/marked.png"}, [ls.annotation(result)])]
    _, rows = export(tmp_path, media, tasks, mark_detector=MarksDetector(), refer_marks=True)
    (refer,) = refer_rows(rows)
    assert refer["objects"]["bbox"] == [[300, 200, 500, 300]] == marks_row(rows)["objects"]["bbox"]


NEAR = 24
"""The near-duplicate distance in these tests: the marks move this 720x480 text page's 64-bit phash by 10-20 bits
(a photo-like screen moves far less, within the default 4), so the tests widen it to make them near duplicates."""


def splits(out: Path) -> dict[int, str]:
    """task id -> the split its rows are in."""
    found: dict[int, str] = {}
    for split in ("train", "val"):
        for line in (out / f"{split}.jsonl").read_text().splitlines():
            found[json.loads(line)["labelloop"]["task_id"]] = split
    return found


def test_near_duplicates_marked_differently_are_kept_in_one_split_group(tmp_path: Path, media: Path) -> None:
    marked = np.asarray(Image.open(media / "upload" / "1" / "marked.png"))
    (media / "upload" / "1" / "again.jpg").write_bytes(encode(Image.fromarray(marked), "JPEG", quality=95))
    ls = LabelStudioExport()
    tasks = [
        task(ls),
        task(ls, "The blue ring shows the heading is too long.", image="other.png"),  # same screen, another mark
        task(ls),  # the same bytes again: an exact duplicate
        task(ls, image="again.jpg"),  # re-encoded, same marks, same note: a near duplicate
        task(ls, "Another note on the same marks.", image="again.jpg"),  # same marks, another note: kept
    ]
    report, _ = export(tmp_path, media, tasks, mark_detector=MarksDetector(), val_fraction=0.5, near_dup_distance=NEAR)
    assert report.dropped_by_reason == {"exact_duplicate": 1, "near_duplicate": 1}
    assert report.cleaning["near_duplicates_grouped"] == 2
    found = splits(tmp_path / "out")
    kept = [tasks[i]["id"] for i in (0, 1, 4)]
    assert set(found) == set(kept) and len({found[k] for k in kept}) == 1


@pytest.mark.parametrize("seed", range(4))
def test_grouped_near_duplicates_share_the_split_whatever_the_seed(tmp_path: Path, media: Path, seed: int) -> None:
    ls = LabelStudioExport()
    tasks = [task(ls), task(ls, "The blue ring shows the heading is too long.", image="other.png")]
    _, rows = export(
        tmp_path, media, tasks, mark_detector=MarksDetector(), val_fraction=0.5, seed=seed, near_dup_distance=NEAR
    )
    found = splits(tmp_path / "out")
    assert len(found) == 2 and len(set(found.values())) == 1
    assert len({row["labelloop"]["image_sha256"] for row in rows}) == 2


def test_near_duplicates_of_other_projects_are_still_dropped(tmp_path: Path, media: Path) -> None:
    config = parse_label_config(
        '<View><Image name="image" value="$image"/><TextArea name="caption" toName="image"/></View>'
    )
    ls = LabelStudioExport()
    tasks = [ls.task({"image": f"/data/upload/1/{name}"}, [ls.annotation([ls.textarea("caption", f"A page {name}")])])
             for name in ("marked.png", "other.png")]  # fmt: skip
    report, _ = export(tmp_path, media, tasks, config=config, near_dup_distance=NEAR)
    assert report.dropped_by_reason == {"near_duplicate": 1}


def test_the_detector_pickles_into_worker_processes(tmp_path: Path, media: Path) -> None:
    detector = MarksDetector(min_score=0.2)
    assert pickle.loads(pickle.dumps(detector)) == detector
    tasks = [task(LabelStudioExport(), original="/data/upload/1/clean.png")]
    report, rows = export(tmp_path, media, tasks, mark_detector=detector, refer_marks=True, workers=2)
    assert report.rows_by_kind == {"marked": 1, "grounding": 2} and len(refer_rows(rows)) == 1


def test_a_reader_gives_each_mark_its_labels_text_as_the_ref() -> None:
    image, _ = label(rectangle(page(), BOX, width=3), (410, 100), "total?")
    found = MarksDetector(reader=lambda crop: "total?")(image)
    rect = next(m for m in found if m.kind == "rectangle")
    assert rect.label == "total?" and rect.target == Box(rect.x0, rect.y0, rect.x1, rect.y1)
    text = next(m for m in found if m.kind == "text")
    assert text.target is None
    assert [m.label for m in MarksDetector()(image)] == [None, None]


def test_an_arrows_target_lies_past_its_tip_and_marks_scale_with_the_image() -> None:
    mark = DetectedMark(10, 10, 110, 20, kind="arrow", tail=(10.0, 15.0), head=(110.0, 15.0))
    target = mark.target
    assert target is not None and target.x0 < 110 < target.x1 and target.y0 < 15 < target.y1
    assert (target.x0 + target.x1) / 2 > 110
    half = mark.scaled(0.5, 0.5)
    assert isinstance(half, DetectedMark) and half.head == (55.0, 7.5) and half.x1 == 55.0


def cli_project(tmp_path: Path, media: Path) -> list[str]:
    ls = LabelStudioExport()
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps([task(ls, original="/data/upload/1/clean.png")]))
    return ["export", "--input", str(export_file), "--label-config", str(REPO / "label_configs" / "marked_screenshot.xml"),
            "--media-dir", str(media), "--workers", "1", "--quiet", "--val-fraction", "0"]  # fmt: skip


def test_the_cli_detects_marks_by_default_for_a_marked_config(tmp_path: Path, media: Path) -> None:
    main([*cli_project(tmp_path, media), "--out", str(tmp_path / "on")])
    rows = [json.loads(line) for line in (tmp_path / "on" / "train.jsonl").read_text().splitlines()]
    assert len(refer_rows(rows)) == 1 and len(marks_row(rows)["objects"]["bbox"]) == 3
    main([*cli_project(tmp_path, media), "--out", str(tmp_path / "off"), "--no-detect-marks"])
    rows = [json.loads(line) for line in (tmp_path / "off" / "train.jsonl").read_text().splitlines()]
    assert [row["labelloop"]["kind"] for row in rows] == ["marked"]
    with pytest.raises(SystemExit) as info:
        main([*cli_project(tmp_path, media), "--out", str(tmp_path / "bad"), "--no-detect-marks", "--unmark"])
    assert info.value.code == 2


@pytest.mark.swift
def test_ms_swift_encodes_the_marked_rows(
    tmp_path: Path, media: Path, tiny_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_PIXELS", "50176")
    from swift import get_processor, get_template, load_dataset

    tasks = [task(LabelStudioExport(), original="/data/upload/1/clean.png")]
    export(tmp_path, media, tasks, mark_detector=MarksDetector(), refer_marks=True)
    jsonl = tmp_path / "out" / "train.jsonl"
    model = tiny_model("qwen2_vl")
    processor = get_processor(str(model), model_type="qwen2_vl")
    template = get_template(processor, template_type="qwen2_vl", max_length=4096, truncation_strategy="raise")
    template.set_mode("train")
    dataset, _ = load_dataset([str(jsonl)], strict=True, num_proc=None, load_from_cache_file=False)
    assert len(dataset) == 3
    texts = [template.safe_decode(template.encode(dataset[i])["input_ids"]) for i in range(3)]
    refer = next(text for text in texts if NOTE in text and "<|box_start|>" in text)
    assert f"<|object_ref_start|>{NOTE}<|object_ref_end|>? Give the box of each place." in refer
    assert refer.count("<|box_start|>") == 2 and "<bbox>" not in refer
    marks = next(text for text in texts if "<|object_ref_start|>marks<|object_ref_end|>" in text)
    assert marks.count("<|box_start|>") == 3


def test_marks_are_detected_before_the_image_is_shrunk_and_boxed_in_its_pixels(tmp_path: Path, media: Path) -> None:
    thin = rectangle(page(), BOX, width=2)  # 2 px: one pixel once the export halves the image
    (media / "upload" / "1" / "thin.png").write_bytes(encode(thin, "PNG"))
    tasks = [task(LabelStudioExport(), image="thin.png")]
    _, rows = export(tmp_path, media, tasks, mark_detector=MarksDetector(), refer_marks=True, max_side=360)
    (box,) = marks_row(rows)["objects"]["bbox"]
    assert iou(tuple(box), tuple(v / 2 for v in BOX)) >= 0.8
    assert Image.open(marks_row(rows)["images"][0]).size == (360, 240)
