"""The engine interface: what the backend, the bulk predictor and the evaluator ask of a model.

An engine turns (image, prompt) pairs into text with per-token log-probabilities, and scores fixed options by
their likelihood. It knows its model family's chat formatting but nothing about Label Studio: prompts come
from ``prompts.py`` and the text goes to ``regions.py``. Two implementations: ``transformers`` (in-process,
optional peft adapters on one base model) and ``openai`` (an OpenAI-compatible server; adapters are served
model names). Engines are built by the holder (``holder.py``), never per request.

Failure semantics: ``generate``/``score_options`` raise :class:`EngineError` for a request the engine cannot
run (timeout, server error, out of memory), with a message naming the engine and the cause; they never
return partial lists — one result per request, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ml_backend.exceptions import LabelloopError

if TYPE_CHECKING:
    from PIL import Image

    from ml_backend.settings import Family


class EngineError(LabelloopError):
    """The engine could not answer (timeout, server error, resources); the message names engine and cause."""


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter: the registry's version id and its directory (for ``openai``: the served model name)."""

    version: str
    path: str


@dataclass(frozen=True)
class GenerationRequest:
    """One image and one user prompt (the engine adds the image placeholder its chat template expects)."""

    image: Image.Image
    prompt: str
    max_new_tokens: int = 256
    adapter: AdapterRef | None = None


@dataclass(frozen=True)
class Generation:
    """The model's answer with what the parsers and scorers need.

    Attributes:
        text: decoded answer, special tokens kept (Qwen2-VL boxes are special tokens).
        tokens: the decoded text of each generated token, in order (``"".join(tokens) == text``).
        logprobs: the log-probability of each generated token (same length as ``tokens``).
        input_size: (width, height) of the image as the model saw it after its processor's resize; Qwen2.5-VL
            boxes are in these pixels.
    """

    text: str
    tokens: tuple[str, ...] = ()
    logprobs: tuple[float, ...] = ()
    input_size: tuple[int, int] = (0, 0)
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """A loaded model that can answer batches. Thread-safe: the holder shares one engine across requests."""

    family: Family
    base_name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer each request (batched internally); one Generation per request, in order."""
        ...

    def score_options(self, request: GenerationRequest, options: Sequence[str]) -> list[float]:
        """Total log-probability of each option as the answer to ``request``; one float per option."""
        ...

    def load_adapter(self, adapter: AdapterRef) -> None:
        """Make ``adapter`` servable (idempotent) while other requests keep running on what is loaded."""
        ...

    def unload_adapter(self, adapter: AdapterRef) -> None:
        """Free ``adapter``; requests naming it afterwards raise EngineError."""
        ...

    def close(self) -> None:
        """Release resources (threads, clients, GPU memory)."""
        ...
