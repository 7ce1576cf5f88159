"""The engine interface: what the backend, the bulk predictor and the evaluator ask of a model.

An engine turns (image, prompt) pairs into text with per-token log-probabilities, and scores fixed options by
their likelihood. It knows its model family's chat formatting but nothing about Label Studio: prompts come
from ``prompts.py`` and the text goes to ``regions.py``. Two implementations: ``transformers`` (in-process,
optional peft adapters on one base model) and ``openai`` (an OpenAI-compatible server; adapters are served
model names, loaded into the server at run time). Engines are built by the holder (``holder.py``), never per
request; :func:`build_engine` picks the implementation named by ``Settings.engine`` and imports it lazily (torch
only for ``transformers``).

Failure semantics: ``generate``/``score_options`` raise :class:`EngineError` for a request the engine cannot
run (timeout, server error, out of memory, an adapter that is not loaded), with a message naming the engine
and the cause; they never return partial lists — one result per request, in order.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ml_backend.exceptions import LabelloopError

if TYPE_CHECKING:
    from PIL import Image

    from ml_backend.settings import Family, Settings


class EngineError(LabelloopError):
    """The engine could not answer (timeout, server error, resources); the message names engine and cause."""


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter: the registry's version id (also its served model name on an ``openai`` server) and its
    directory (which peft loads, or which the server loads at run time)."""

    version: str
    path: str


@dataclass(frozen=True)
class GenerationRequest:
    """One image and one user prompt (the engine adds the image placeholder its chat template expects).

    ``adapter`` None means the base model. Requests with different adapters may share one ``generate`` call;
    the engine groups them (or uses per-row adapter names) as it can.
    """

    image: Image.Image
    prompt: str
    max_new_tokens: int = 256
    adapter: AdapterRef | None = None


@dataclass(frozen=True)
class Generation:
    """The model's answer with what the parsers and scorers need.

    Attributes:
        text: decoded answer without the end-of-turn token, special tokens kept (Qwen2-VL boxes are special
            tokens).
        tokens: the decoded text of each generated token, in order; ``"".join(tokens) == text`` whenever the
            engine could align them (a token ending inside a multi-byte character decodes to ``""`` and the
            character is carried by the next one). Empty when the engine has no token detail.
        logprobs: the log-probability of each generated token (same length as ``tokens``).
        input_size: (width, height) of the image as the model saw it after its processor's resize; Qwen2.5-VL
            boxes are in these pixels.
        truncated: the answer stopped at ``max_new_tokens`` rather than at the end-of-turn token.
        extra: engine-specific numbers worth logging (e.g. ``prompt_tokens``).
    """

    text: str
    tokens: tuple[str, ...] = ()
    logprobs: tuple[float, ...] = ()
    input_size: tuple[int, int] = (0, 0)
    truncated: bool = False
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
        """Total log-probability of each option as the answer to ``request``; one float per option.

        ``request.max_new_tokens`` is ignored. An engine that cannot score whole options exactly says how it
        approximates in its module docstring (``openai``: first-token log-probabilities).
        """
        ...

    def load_adapter(self, adapter: AdapterRef) -> None:
        """Make ``adapter`` servable (idempotent) while other requests keep running on what is loaded.

        Raises:
            EngineError: the adapter cannot be loaded (missing directory, incompatible base); nothing changes.
        """
        ...

    def unload_adapter(self, adapter: AdapterRef) -> None:
        """Free ``adapter``; requests naming it afterwards raise EngineError. Unknown adapters are ignored."""
        ...

    def close(self) -> None:
        """Release resources (threads, clients, GPU memory)."""
        ...


ENGINES: dict[str, str] = {
    "transformers": "ml_backend.engines.transformers:TransformersEngine",
    "openai": "ml_backend.engines.openai:OpenAIEngine",
}


def build_engine(settings: Settings) -> Engine:
    """Build the engine ``settings.engine`` names, importing its module only now.

    Raises:
        EngineError: the model cannot be loaded or the server is misconfigured; the message says which.
    """
    module_name, attr = ENGINES[settings.engine].split(":")
    cls = getattr(importlib.import_module(module_name), attr)
    engine: Engine = cls(settings)
    return engine
