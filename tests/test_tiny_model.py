"""The offline tiny Qwen-VL: real Qwen token ids, loadable by transformers' Qwen-VL classes, trainable by ms-swift."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from ml_backend.settings import FAMILIES

EXPECTED_CLASSES = {
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_transformers_loads_it_with_its_qwen_vl_classes_and_generates(
    tiny_model: Callable[[str], Path], family: str, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_model(family)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(path)
    assert (type(model).__name__, type(processor).__name__) == EXPECTED_CLASSES[family]

    tokenizer = processor.tokenizer
    assert tokenizer("Hello, world!").input_ids == [9707, 11, 1879, 0]  # the real Qwen2 ids
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"]) == [
        151644,
        151645,
        151652,
        151655,
    ]
    assert tokenizer.convert_tokens_to_ids("<|box_start|>") == 151648

    image_path = tmp_path / "red.png"
    Image.new("RGB", (224, 168), (255, 0, 0)).save(image_path)
    messages = [
        {"role": "user", "content": [{"type": "image", "path": str(image_path)}, {"type": "text", "text": "Colour?"}]}
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    image_tokens = int((inputs["input_ids"] == 151655).sum())
    merge = processor.image_processor.merge_size
    assert image_tokens == int(inputs["image_grid_thw"].prod()) // merge**2
    assert 4 <= image_tokens <= 64  # the tiny processor caps images at 64 visual tokens
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_same_seed_gives_the_same_weights(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from ml_backend.tiny_model import build_tiny_model

    a = load_file(build_tiny_model(tmp_path / "a", "qwen2_vl", seed=3) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", "qwen2_vl", seed=3) / "model.safetensors")
    c = load_file(build_tiny_model(tmp_path / "c", "qwen2_vl", seed=4) / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert (a[name] == b[name]).all()
    assert not (a[name] == c[name]).all()


def test_cli_builds_it_and_rejects_an_unknown_family(tmp_path: Path) -> None:
    labelloop = [sys.executable, "-m", "ml_backend.cli"]
    bad = subprocess.run([*labelloop, "tiny-model", str(tmp_path / "m"), "--family", "llava"], capture_output=True)
    assert bad.returncode == 2
    assert b"Invalid value for '--family': 'llava' is not one of 'qwen2_vl', 'qwen2_5_vl', 'qwen3_vl'." in bad.stderr
    ok = subprocess.run([*labelloop, "tiny-model", str(tmp_path / "m"), "--family", "qwen2_vl"], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    info = json.loads((tmp_path / "m" / "labelloop_tiny.json").read_text())
    assert info["family"] == "qwen2_vl"
    assert 9_000_000 < info["parameters"] < 11_000_000
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {
        p.name for p in (tmp_path / "m").iterdir()
    }


@pytest.mark.slow
@pytest.mark.swift
@pytest.mark.parametrize("family", FAMILIES)
def test_ms_swift_trains_it_with_lora(tiny_model: Callable[[str], Path], family: str, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    Image.new("RGB", (112, 112), (255, 0, 0)).save(image)
    rows = [
        {"messages": [{"role": "user", "content": "<image>Colour?"}, {"role": "assistant", "content": "red"}],
         "images": [str(image)]},
        {"messages": [{"role": "user", "content": "<image>Find the <ref-object>"},
                      {"role": "assistant", "content": "<bbox>"}],
         "images": [str(image)], "objects": {"ref": ["square"], "bbox": [[10, 10, 60, 60]], "bbox_type": "real"}},
    ]  # fmt: skip
    dataset = tmp_path / "train.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    args = [
        "--model", str(tiny_model(family)), "--model_type", family, "--template", family, "--tuner_type", "lora",
        "--dataset", str(dataset), "--max_steps", "2", "--per_device_train_batch_size", "1",
        "--gradient_accumulation_steps", "1", "--torch_dtype", "float32", "--fp16", "false", "--bf16", "false",
        "--dataloader_num_workers", "0", "--dataset_num_proc", "1", "--report_to", "none", "--check_model", "false",
        "--gradient_checkpointing", "false", "--logging_steps", "1", "--save_steps", "2", "--save_only_model", "true",
        "--add_version", "false", "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "MAX_PIXELS": "50176"}
    result = subprocess.run([sys.executable, "-m", "swift.cli.sft", *args], capture_output=True, env=env, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((checkpoint / "adapter_config.json").read_text())["peft_type"] == "LORA"
    logged = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in logged)
