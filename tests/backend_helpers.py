"""Helpers for the ML-backend tests (the fixtures built on them are in ``backend_fixtures.py``).

- :class:`ScriptedEngine`: an engine that answers from a script: for protocol-level tests, where the point
  is the HTTP surface or the parsing of a *given* model answer, not the model. Engine tests use the real tiny
  Qwen-VL.
- :class:`ImageServer` routes, :func:`png_bytes`, :func:`bomb_png`: images and failing image URLs.
- :func:`train_memo_adapter`: a LoRA adapter for the tiny Qwen2-VL that answers :func:`memo_pairs` exactly.
- The label configs the tests use.
"""

from __future__ import annotations

import io
import math
import os
import random
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ml_backend.engines.base import AdapterRef, EngineError, Generation, GenerationRequest
from ml_backend.regions import PATCH_FACTOR, smart_resize
from ml_backend.settings import Settings

CACHE = Path(os.environ.get("LABELLOOP_CACHE", Path.home() / ".cache" / "labelloop"))  # as in conftest.py

TINY_MIN_PIXELS = 28 * 28 * 4
TINY_MAX_PIXELS = 28 * 28 * 64
GOOD_TOKEN = "0123456789abcdef0123456789abcdef01234567"

CAPTION_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image" editable="true" maxSubmissions="1"/>
</View>"""
VQA_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Header value="$question"/>
  <TextArea name="answer" toName="image"/>
</View>"""
GROUNDING_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="cat"/><Label value="dog"/></RectangleLabels>
</View>"""
CHOICES_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="scene" toName="image"><Choice value="indoor"/><Choice value="outdoor"/></Choices>
</View>"""


# --- a scripted engine ---------------------------------------------------------------------------------------


_SPECIAL_RE = re.compile(r"(<\|[a-z_]+\|>)")


def split_tokens(text: str) -> tuple[str, ...]:
    """``text`` cut into token-like pieces: special tokens whole, other text in runs of up to 3 characters."""
    pieces: list[str] = []
    for part in _SPECIAL_RE.split(text):
        if _SPECIAL_RE.fullmatch(part):
            pieces.append(part)
        else:
            pieces.extend(part[i : i + 3] for i in range(0, len(part), 3))
    return tuple(piece for piece in pieces if piece)


@dataclass
class ScriptedEngine:
    """An Engine answering from a script; records what it was asked.

    ``answer(request) -> text`` (or a fixed string); every token gets ``logprob``; ``input_size`` is Qwen's
    smart resize of the image with the tiny model's pixel bounds. ``options(request, options) -> [logprob]``
    defaults to preferring the first option.
    """

    family: Any = "qwen2_vl"
    answer: Callable[[GenerationRequest], str] | str = ""
    logprob: float = -0.1
    options: Callable[[GenerationRequest, Sequence[str]], list[float]] | None = None
    delay: float = 0.0
    base_name: str = "scripted"
    fail: Exception | None = None
    calls: list[list[GenerationRequest]] = field(default_factory=list)
    option_calls: list[tuple[GenerationRequest, tuple[str, ...]]] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def input_size(self, image: Image.Image) -> tuple[int, int]:
        return smart_resize(*image.size, factor=PATCH_FACTOR[self.family], min_pixels=TINY_MIN_PIXELS,
                            max_pixels=TINY_MAX_PIXELS)  # fmt: skip

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        with self.lock:
            self.calls.append(list(requests))
        if self.fail is not None:
            raise self.fail
        if self.delay:
            time.sleep(self.delay)
        results = []
        for request in requests:
            if request.adapter is not None and request.adapter.version not in self.loaded:
                raise EngineError(f"scripted: adapter {request.adapter.version!r} is not loaded")
            text = self.answer(request) if callable(self.answer) else self.answer
            tokens = split_tokens(text)
            results.append(
                Generation(text, tokens, (self.logprob,) * len(tokens), self.input_size(request.image), False)
            )
        return results

    def score_options(self, request: GenerationRequest, options: Sequence[str]) -> list[float]:
        with self.lock:
            self.option_calls.append((request, tuple(options)))
        if self.fail is not None:
            raise self.fail
        if self.options is not None:
            return self.options(request, options)
        return [-1.0 * (index + 1) for index in range(len(options))]

    def load_adapter(self, adapter: AdapterRef) -> None:
        if adapter.path == "missing":
            raise EngineError(f"scripted: cannot load adapter {adapter.version!r} from missing")
        with self.lock:
            if adapter.version not in self.loaded:
                self.loaded.append(adapter.version)

    def unload_adapter(self, adapter: AdapterRef) -> None:
        with self.lock:
            if adapter.version in self.loaded:
                self.loaded.remove(adapter.version)
                self.unloaded.append(adapter.version)

    def close(self) -> None:
        self.closed = True


def scripted_factory(engine: ScriptedEngine) -> Callable[[Settings], ScriptedEngine]:
    """An ``engine_factory`` that hands out ``engine``."""
    return lambda settings: engine


# --- images over HTTP ----------------------------------------------------------------------------------------


def png_bytes(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 9000, height: int = 9000) -> bytes:
    """A 70-byte PNG whose header claims ``width`` x ``height`` pixels (never decoded by a careful reader)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


@dataclass
class ImageServer:
    """Routes: ``/img/WxH.png``; ``/data/upload/1/WxH.png`` and ``/tasks/N/presign/`` (a redirect to an image;
    both need ``Token GOOD_TOKEN``, like Label Studio);
    ``/status/CODE``; ``/slow.png`` (2 s); ``/text``; ``/garbage.png``; ``/bomb.png``; ``/redirect?to=URL``."""

    url: str
    hits: list[str] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.url.split("//", 1)[1]


MEMO_BOX = "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(125,346),(587,903)<|box_end|>"
MEMO_CAPTION = "a small coloured square"
MEMO_QUESTION = "What colour is it?"
MEMO_ANSWER = "it is a colour"


def memo_pairs() -> list[tuple[str, str]]:
    """The prompts the memo adapter answers, exactly as the predictor asks an adapter (the prompts of the
    exporter's training rows), and the answers."""
    from converters.label_config import parse_label_config
    from ml_backend.prompts import asks_for

    def prompt(xml: str) -> str:
        config = parse_label_config(xml)
        [ask] = asks_for(config.controls[0], {"question": MEMO_QUESTION}, "qwen2_vl", config=config, tuned=True)
        return ask.prompt

    return [
        (prompt(CAPTION_CONFIG), MEMO_CAPTION),
        (prompt(GROUNDING_CONFIG), MEMO_BOX),
        (prompt(VQA_CONFIG), MEMO_ANSWER),
    ]


def train_memo_adapter(base: Path, out_dir: Path, *, steps: int = 600, seed: int = 0) -> Path:
    """Train a LoRA (attention/MLP) + lm_head adapter on ``base`` until it answers :func:`memo_pairs` exactly.

    The loss is taken on the answer tokens only (the vocabulary projection runs on ~40 positions, not every
    position), so this takes a few hundred steps of well under a second on CPU.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = AutoModelForImageTextToText.from_pretrained(str(base), dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(str(base))
    processor.tokenizer.padding_side = "right"
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, modules_to_save=["lm_head"],
        target_modules=r".*language_model.*\.(q_proj|v_proj|o_proj|down_proj)",
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-3)
    inner = peft_model.base_model.model
    pairs = memo_pairs()
    peft_model.train()
    for _ in range(steps):
        images = [
            Image.new("RGB", (rng.randint(28, 220), rng.randint(28, 220)), tuple(rng.randint(0, 255) for _ in range(3)))
            for _ in pairs
        ]
        texts, prompt_lengths = [], []
        for (prompt, answer), image in zip(pairs, images, strict=True):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            texts.append(chat + answer + "<|im_end|>")
            prompt_lengths.append(processor(text=[chat], images=[image], return_tensors="pt")["input_ids"].shape[1])
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
        hidden = inner.model(**inputs).last_hidden_state
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        states = torch.cat(
            [hidden[i, p - 1 : n - 1] for i, (p, n) in enumerate(zip(prompt_lengths, lengths, strict=True))]
        )
        targets = torch.cat(
            [inputs["input_ids"][i, p:n] for i, (p, n) in enumerate(zip(prompt_lengths, lengths, strict=True))]
        )
        loss = torch.nn.functional.cross_entropy(inner.lm_head(states), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.001:  # memorised well enough to survive batching and padding
            break
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
