"""The exporter's JSONL read by ms-swift's own dataset loader and encoded by its Qwen2-VL template (tiny model).

This is also the evidence for the metadata decision in ``converters/rows.py``: ms-swift 4.6 loads rows that carry
the extra nested ``labelloop`` key and drops that column before encoding (``remove_useless_columns``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from converters.boxes import Box
from converters.export import ExportOptions, export_tasks
from converters.label_config import parse_label_config
from converters.media import MediaConfig
from converters.samples import LabelStudioExport, encode

CONFIG = parse_label_config(
    """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image"/>
  <Header value="$question"/>
  <TextArea name="answer" toName="image"/>
  <RectangleLabels name="objects" toName="image"><Label value="cat"/><Label value="dog"/></RectangleLabels>
  <Choices name="weather" toName="image"><Choice value="sun"/><Choice value="rain"/></Choices>
</View>"""
)


def smart_resize(height: int, width: int, factor: int = 28) -> tuple[int, int]:
    """Qwen2-VL's resize for an image well inside its pixel limits: each side rounded to a multiple of 28."""
    return max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)


@pytest.fixture(scope="module")
def exported_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("swift")
    upload = root / "media" / "upload" / "1"
    upload.mkdir(parents=True)
    image = Image.new("RGB", (200, 100), (240, 240, 240))
    image.paste((200, 30, 30), (20, 20, 80, 60))
    (upload / "cat.png").write_bytes(encode(image, "PNG"))
    ls = LabelStudioExport()
    result = [
        ls.textarea("caption", "A red cat-shaped block on grey."),
        ls.textarea("answer", "One.", "Red."),
        ls.rectangle("objects", Box(20, 20, 80, 60), 200, 100, ["cat"]),  # x=10 y=20 w=30 h=40 percent
        ls.choice("weather", "sun"),
    ]
    task = ls.task(
        {"image": "/data/upload/1/cat.png", "question": ["How many cats?", "What colour is it?"]},
        [ls.annotation(result)],
    )
    out = root / "out"
    report = export_tasks(
        [task], CONFIG, out, options=ExportOptions(workers=1, val_fraction=0.0, thumbnails=0),
        media=MediaConfig(media_dir=root / "media"),
    )  # fmt: skip
    assert report.rows == {"train": 4, "val": 0}
    return out / "train.jsonl"


@pytest.mark.swift
def test_ms_swift_loads_and_encodes_every_exported_row(
    exported_jsonl: Path, tiny_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_PIXELS", "50176")
    from swift import get_processor, get_template, load_dataset

    raw = [json.loads(line) for line in exported_jsonl.read_text().splitlines()]
    assert all("labelloop" in row for row in raw)

    model = tiny_model("qwen2_vl")
    processor = get_processor(str(model), model_type="qwen2_vl")
    template = get_template(processor, template_type="qwen2_vl", max_length=4096, truncation_strategy="raise")
    template.set_mode("train")
    dataset, _ = load_dataset([str(exported_jsonl)], strict=True, num_proc=None, load_from_cache_file=False)
    assert len(dataset) == 4
    assert "labelloop" not in dataset.column_names  # ms-swift drops the metadata column itself
    assert {"messages", "images", "objects"} <= set(dataset.column_names)

    height, width = smart_resize(100, 200)
    expected_pads = (height // 14) * (width // 14) // 4  # 14-pixel patches, 2x2 merged into one token
    decoded: dict[str, str] = {}
    for index in range(len(dataset)):
        row: dict[str, Any] = dataset[index]
        encoded = template.encode(row)
        text = template.safe_decode(encoded["input_ids"])
        kind = raw[index]["labelloop"]["kind"]
        decoded[kind] = text
        assert encoded["input_ids"].count(151655) == expected_pads == 28  # <|image_pad|>
        assert encoded["image_grid_thw"].tolist() == [[1, height // 14, width // 14]]
        assert any(label != -100 for label in encoded["labels"])

    assert "<|vision_start|>[151655 * 28]<|vision_end|>Describe this image.<|im_end|>" in decoded["caption"]
    assert "A red cat-shaped block on grey.<|im_end|>" in decoded["caption"]
    # the box (20, 20)-(80, 60) of the 200x100 image, on Qwen2-VL's 0..1000 grid
    assert (
        "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,200),(400,600)<|box_end|><|im_end|>"
        in decoded["grounding"]
    )
    assert "How many cats?<|im_end|>\n<|im_start|>assistant\nOne.<|im_end|>" in decoded["vqa"]
    assert "What colour is it?<|im_end|>\n<|im_start|>assistant\nRed.<|im_end|>" in decoded["vqa"]
    assert "Options: sun, rain." in decoded["choices"] and decoded["choices"].endswith("sun<|im_end|>\n")
