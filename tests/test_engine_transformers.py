"""engines/transformers.py with the real tiny Qwen-VL of each family: batching, log-probs, options, adapters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from backend_helpers import MEMO_BOX, MEMO_CAPTION, memo_pairs
from PIL import Image

from ml_backend.engines.base import AdapterRef, Engine, EngineError, GenerationRequest, build_engine
from ml_backend.engines.transformers import detect_family
from ml_backend.regions import PATCH_FACTOR, smart_resize
from ml_backend.settings import Settings

pytest_plugins = ["backend_fixtures"]

IMAGES = [Image.new("RGB", (640, 480), (200, 30, 30)), Image.new("RGB", (100, 300), (30, 200, 30)),
          Image.new("RGB", (57, 57), (30, 30, 200))]  # fmt: skip


def test_batched_generation_equals_one_at_a_time(shared_engine: Callable[..., Any]) -> None:
    engine = shared_engine("qwen2_vl")
    requests = [GenerationRequest(image, prompt, 6) for image, prompt in
                zip(IMAGES, ["Describe this image.", "Find the cat.", "What is it?"], strict=True)]  # fmt: skip
    batched = engine.generate(requests)
    alone = [engine.generate([request])[0] for request in requests]
    for together, single in zip(batched, alone, strict=True):
        assert together.tokens == single.tokens
        assert together.logprobs == pytest.approx(single.logprobs, abs=1e-4)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_each_family_generates_with_logprobs_and_input_size(
    shared_engine: Callable[..., Any], tiny_model: Callable[..., Path], family: str
) -> None:
    engine = shared_engine(family)
    assert isinstance(engine, Engine) and engine.family == family
    size = json.loads((tiny_model(family) / "processor_config.json").read_text())["image_processor"]["size"]
    [generation] = engine.generate([GenerationRequest(IMAGES[0], "Describe this image.", 5)])
    assert generation.input_size == smart_resize(
        640, 480, factor=PATCH_FACTOR[family], min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"]
    )
    assert len(generation.tokens) == len(generation.logprobs) == 5
    assert "".join(generation.tokens) == generation.text
    assert all(lp <= 0 for lp in generation.logprobs)
    assert generation.truncated  # a random model does not stop within 5 tokens


def test_option_scores_do_not_depend_on_the_batch(shared_engine: Callable[..., Any]) -> None:
    engine = shared_engine("qwen2_vl")
    request = GenerationRequest(IMAGES[0], "Is this indoor or outdoor?")
    together = engine.score_options(request, ["indoor", "outdoor", "a long answer with many tokens"])
    alone = [
        engine.score_options(request, [option])[0] for option in ["indoor", "outdoor", "a long answer with many tokens"]
    ]
    assert together == pytest.approx(alone, abs=1e-4)
    assert together[2] < min(together[:2])  # more tokens, more improbable under a random model


def test_memo_adapter_answers_its_prompts_and_scores_them(
    shared_engine: Callable[..., Any], memo_adapter: AdapterRef
) -> None:
    engine = shared_engine("qwen2_vl")
    image = Image.new("RGB", (333, 222), (5, 100, 200))
    base_before = engine.generate([GenerationRequest(image, "Describe this image.", 4)])[0]
    engine.load_adapter(memo_adapter)
    try:
        requests = [GenerationRequest(image, prompt, 48, memo_adapter) for prompt, _ in memo_pairs()]
        requests.append(GenerationRequest(image, "Describe this image.", 4))  # base, same batch
        *adapted, base = engine.generate(requests)
        assert [g.text for g in adapted] == [answer for _, answer in memo_pairs()]
        assert not any(g.truncated for g in adapted)
        assert adapted[1].text == MEMO_BOX and "<|box_start|>" in adapted[1].tokens
        assert base.tokens == base_before.tokens  # the base row of a mixed batch is the base model
        caption_request = GenerationRequest(image, memo_pairs()[0][0], adapter=memo_adapter)
        exact, other = engine.score_options(caption_request, [MEMO_CAPTION, "a dog"])
        assert sum(adapted[0].logprobs) - 0.1 <= exact <= sum(adapted[0].logprobs) + 1e-3  # + log P(end of turn)
        assert other < exact - 5
    finally:
        engine.unload_adapter(memo_adapter)
    with pytest.raises(EngineError, match="adapter 'memo' is not loaded"):
        engine.generate([GenerationRequest(image, "Describe this image.", 2, memo_adapter)])
    assert engine.generate([GenerationRequest(image, "Describe this image.", 4)])[0].tokens == base_before.tokens


def test_a_bad_adapter_directory_is_refused(shared_engine: Callable[..., Any], tmp_path: Path) -> None:
    engine = shared_engine("qwen2_vl")
    with pytest.raises(EngineError, match="transformers: cannot load adapter 'broken' from"):
        engine.load_adapter(AdapterRef("broken", str(tmp_path / "nothing-here")))
    assert engine.loaded_adapters() == []
    assert engine.generate([GenerationRequest(IMAGES[2], "hi", 2)])[0].tokens


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "cannot read model_type from"),
        ({"model_type": "llava"}, "model_type 'llava' in"),
    ],
)
def test_family_detection_errors(tmp_path: Path, config: dict[str, str] | None, message: str) -> None:
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineError, match=message):
        detect_family(tmp_path)


def test_a_missing_model_is_an_engine_error(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(model=str(tmp_path / "no-model"), model_family="qwen2_vl")
    with pytest.raises(EngineError, match="transformers: cannot load"):
        build_engine(settings)
