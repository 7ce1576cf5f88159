"""The in-process engine: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL loaded with transformers, optional LoRA adapters.

- **Loaded once.** The holder builds one engine per process; weights and processor load in ``__init__``.
- **Batched.** ``generate`` runs its requests in batches of ``Settings.batch_size`` with left padding; rows
  with different adapters share a batch through peft's ``adapter_names`` (``"__base__"`` for the base model).
- **Adapters.** The first ``load_adapter`` wraps the base in a ``PeftModel``; later ones are added beside it.
  The base weights stay loaded once; an adapter costs its LoRA matrices only.
- **One model call at a time.** A forward pass with ``adapter_names`` installs hooks on shared modules, and
  loading an adapter rewrites them, so every model call holds the engine's lock. Requests beyond it wait;
  the predictor's semaphore bounds how many wait.
- **Log-probabilities** are those of the distribution greedy decoding picked each token from: a logits
  processor run last records ``max - logsumexp`` of the scores per step (O(batch) memory, not the vocabulary
  per step). That is the model's own distribution unless its generation config sets a repetition penalty,
  which then shows in the scores as it shows in the choice.
- **Options** are scored exactly: one forward pass over ``prompt + option + <|im_end|>`` per option (in
  batches), summing the log-probabilities of the option's tokens and of the end-of-turn token, i.e. the
  probability that the model answers exactly this option and stops.

``Settings.engine_timeout`` does not apply here (a forward pass cannot be interrupted); failures (out of
memory, a bad image) raise :class:`EngineError` naming the cause.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_backend.engines.base import AdapterRef, EngineError, Generation, GenerationRequest
from ml_backend.settings import FAMILIES

if TYPE_CHECKING:
    from PIL import Image

    from ml_backend.settings import Family, Settings

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"
END_OF_TURN = "<|im_end|>"
_MODEL_CLASSES: dict[str, str] = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}


def _recorder() -> Any:
    """A logits processor, run last, that records the log-probability of the token greedy decoding picks at
    each step: ``max(scores) - logsumexp(scores)``; O(batch) memory per step instead of the whole vocabulary."""
    import torch
    from transformers import LogitsProcessor

    class LogprobRecorder(LogitsProcessor):  # type: ignore[misc]
        def __init__(self) -> None:
            self.steps: list[Any] = []

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            values = scores.float()
            self.steps.append((values.max(dim=-1).values - torch.logsumexp(values, dim=-1)).cpu())
            return scores

    return LogprobRecorder()


def detect_family(model_dir: Path) -> Family:
    """The family named by ``model_type`` in the model directory's ``config.json``.

    Raises:
        EngineError: no readable config.json, or a model type labelloop does not serve.
    """
    config_file = model_dir / "config.json"
    try:
        model_type = json.loads(config_file.read_text())["model_type"]
    except (OSError, ValueError, KeyError) as exc:
        raise EngineError(f"transformers: cannot read model_type from {config_file}: {exc}") from exc
    if model_type not in FAMILIES:
        raise EngineError(
            f"transformers: model_type {model_type!r} in {config_file} is not one of {', '.join(FAMILIES)}; "
            "set LABELLOOP_MODEL_FAMILY if it is a compatible fine-tune"
        )
    family: Family = model_type
    return family


def configure_processor(processor: Any, settings: Settings) -> int:
    """Set up a loaded Qwen-VL processor as the engine uses it: left padding, and ``image_min_pixels`` /
    ``image_max_pixels`` over the processor's own bounds. Returns the image patch size (the model's input is
    ``grid * patch`` pixels: :func:`input_size`)."""
    processor.tokenizer.padding_side = "left"
    image_processor = processor.image_processor
    if settings.image_min_pixels or settings.image_max_pixels:
        size = dict(image_processor.size)
        size["shortest_edge"] = settings.image_min_pixels or size.get("shortest_edge")
        size["longest_edge"] = settings.image_max_pixels or size.get("longest_edge")
        image_processor.size = size
    return int(image_processor.patch_size)


def chat_text(processor: Any, prompt: str) -> str:
    """The model's chat-template text for one image and one user prompt, up to the assistant's turn (the image
    placeholder is expanded by the processor)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text: str = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text


def input_size(grid_thw: Sequence[int], patch: int) -> tuple[int, int]:
    """(width, height) of the image as the model saw it, from the processor's ``image_grid_thw`` row: the frame
    of Qwen2.5-VL boxes (``Generation.input_size``)."""
    _, grid_h, grid_w = grid_thw
    return int(grid_w) * patch, int(grid_h) * patch


def _adapter_name(adapter: AdapterRef) -> str:
    """peft adapter names become module keys: letters, digits and underscores only."""
    return "adapter_" + re.sub(r"\W", "_", adapter.version)


class TransformersEngine:
    """A Qwen-VL in this process. See the module docstring for batching, adapters and locking."""

    def __init__(self, settings: Settings) -> None:
        """Load the model and processor from ``settings.model`` (a local directory or a hub id).

        Raises:
            EngineError: the model cannot be loaded (missing directory, unknown family, a transformers without
                the family's classes, out of memory).
        """
        try:
            import torch
            import transformers
            from transformers import AutoProcessor
        except ImportError as exc:  # pragma: no cover - the environment, not the code
            raise EngineError(
                f"transformers: the inference extra is not installed ({exc}); pip install 'labelloop[inference]'"
            ) from exc
        self._torch = torch
        model_dir = Path(settings.model)
        self.family: Family = settings.model_family or detect_family(model_dir)
        self.base_name = settings.model_label
        class_name = _MODEL_CLASSES[self.family]
        model_class = getattr(transformers, class_name, None)
        if model_class is None:
            raise EngineError(
                f"transformers {transformers.__version__} has no {class_name} ({self.family}); upgrade transformers"
            )
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = settings.torch_dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
        started = time.perf_counter()
        try:
            self._model = model_class.from_pretrained(settings.model, dtype=getattr(torch, dtype_name))
            self._model.to(device).eval()
            self._processor = AutoProcessor.from_pretrained(settings.model)
        except (OSError, ValueError, RuntimeError) as exc:
            raise EngineError(f"transformers: cannot load {settings.model!r}: {exc}") from exc
        self._device = device
        self._patch = configure_processor(self._processor, settings)
        tokenizer = self._processor.tokenizer
        eos = self._model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self._stop_ids = {int(i) for i in eos_ids if i is not None} | {
            int(tokenizer.convert_tokens_to_ids(token)) for token in (END_OF_TURN, "<|endoftext|>")
        }
        self._pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._stop_ids))
        self._batch_size = settings.batch_size
        self._lock = threading.RLock()
        self._peft: Any = None
        self._adapters: dict[str, str] = {}  # version -> peft adapter name
        self._retired: set[str] = set()  # unloaded adapters whose weights peft still holds
        log.info(
            "transformers: loaded %s (%s) on %s/%s in %.1f s",
            self.base_name,
            self.family,
            device,
            dtype_name,
            time.perf_counter() - started,
        )

    # --- prompts and inputs --------------------------------------------------------------------------------

    def _chat_text(self, prompt: str) -> str:
        return chat_text(self._processor, prompt)

    def _inputs(self, texts: list[str], images: list[Image.Image]) -> Any:
        inputs = self._processor(text=texts, images=[img.convert("RGB") for img in images], padding=True,
                                 return_tensors="pt")  # fmt: skip
        return inputs.to(self._device)

    def _runner(self) -> Any:
        return self._peft if self._peft is not None else self._model

    def _adapter_kwargs(self, adapters: Sequence[AdapterRef | None]) -> dict[str, Any]:
        if self._peft is None:
            if any(adapter is not None for adapter in adapters):
                missing = next(a for a in adapters if a is not None)
                raise EngineError(f"transformers: adapter {missing.version!r} is not loaded")
            return {}
        names = []
        for adapter in adapters:
            if adapter is None:
                names.append(BASE_ADAPTER)
            elif adapter.version in self._adapters:
                names.append(self._adapters[adapter.version])
            else:
                raise EngineError(f"transformers: adapter {adapter.version!r} is not loaded")
        return {"adapter_names": names}

    # --- generation ----------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer each request greedily, in batches of ``batch_size``; one Generation per request, in order.

        Raises:
            EngineError: an adapter is not loaded, an image cannot be processed, or the model call failed.
        """
        results: list[Generation] = []
        for start in range(0, len(requests), self._batch_size):
            results.extend(self._generate_batch(requests[start : start + self._batch_size]))
        return results

    def _generate_batch(self, batch: Sequence[GenerationRequest]) -> list[Generation]:
        torch = self._torch
        max_new = max(request.max_new_tokens for request in batch)
        try:
            with self._lock:
                kwargs = self._adapter_kwargs([request.adapter for request in batch])
                inputs = self._inputs([self._chat_text(r.prompt) for r in batch], [r.image for r in batch])
                recorder = _recorder()
                with torch.inference_mode():
                    sequences = self._runner().generate(
                        **inputs,
                        **kwargs,
                        max_new_tokens=max_new,
                        do_sample=False,
                        temperature=None,
                        top_p=None,
                        top_k=None,
                        logits_processor=[recorder],
                        pad_token_id=self._pad_id,
                    )
        except EngineError:
            raise
        except (RuntimeError, ValueError, TypeError) as exc:
            raise EngineError(f"transformers: generation failed: {exc}") from exc
        prompt_len = inputs["input_ids"].shape[1]
        new_ids = sequences[:, prompt_len:].tolist()
        logprobs = torch.stack(recorder.steps, dim=1).tolist()  # (batch, steps): log-prob of the chosen token
        grids = inputs["image_grid_thw"].tolist()
        results = []
        for row, request in enumerate(batch):
            ids, lps, stopped = [], [], False
            for step, token_id in enumerate(new_ids[row][: request.max_new_tokens]):
                if token_id in self._stop_ids:
                    stopped = True
                    break
                ids.append(token_id)
                lps.append(float(logprobs[row][step]))
            tokens = self._token_texts(ids)
            results.append(
                Generation(
                    text="".join(tokens),
                    tokens=tuple(tokens),
                    logprobs=tuple(lps),
                    input_size=input_size(grids[row], self._patch),
                    truncated=not stopped,
                    extra={"prompt_tokens": float(prompt_len)},
                )
            )
        return results

    def _token_texts(self, ids: list[int]) -> list[str]:
        """Each token's text such that the join is the decoded answer; a token ending inside a multi-byte
        character gives "" and the character goes to the token that completes it."""
        tokenizer = self._processor.tokenizer
        texts, previous = [], ""
        for end in range(1, len(ids) + 1):
            current = tokenizer.decode(ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if current.endswith("\ufffd") and end < len(ids):
                texts.append("")
                continue
            texts.append(current[len(previous) :] if current.startswith(previous) else current)
            previous = current if current.startswith(previous) else previous + current
        return texts

    # --- option scoring ------------------------------------------------------------------------------------

    def score_options(self, request: GenerationRequest, options: Sequence[str]) -> list[float]:
        """log P(option, then end of turn | image, prompt) for each option, exactly.

        Raises:
            EngineError: an adapter is not loaded or the model call failed.
        """
        torch = self._torch
        prompt = self._chat_text(request.prompt)
        scores: list[float] = []
        try:
            with self._lock:
                prompt_len = int(self._inputs([prompt], [request.image])["input_ids"].shape[1])
                for start in range(0, len(options), self._batch_size):
                    chunk = list(options[start : start + self._batch_size])
                    kwargs = self._adapter_kwargs([request.adapter] * len(chunk))
                    inputs = self._inputs([prompt + option + END_OF_TURN for option in chunk],
                                          [request.image] * len(chunk))  # fmt: skip
                    with torch.inference_mode():
                        logits = self._runner()(**inputs, **kwargs).logits.float()
                    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
                    targets = inputs["input_ids"][:, 1:]
                    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                    lengths = inputs["attention_mask"].sum(dim=1).tolist()
                    width = inputs["input_ids"].shape[1]
                    for row, length in enumerate(lengths):
                        answer_tokens = int(length) - prompt_len
                        # left padding: the answer is the last `answer_tokens` tokens; target t is logit t-1
                        scores.append(float(picked[row, width - 1 - answer_tokens :].sum()))
        except EngineError:
            raise
        except (RuntimeError, ValueError, TypeError) as exc:
            raise EngineError(f"transformers: option scoring failed: {exc}") from exc
        return scores

    # --- adapters ------------------------------------------------------------------------------------------

    def load_adapter(self, adapter: AdapterRef) -> None:
        """Add a peft LoRA adapter from ``adapter.path`` beside the base (idempotent).

        Raises:
            EngineError: the directory is not a peft adapter for this base; nothing changes.
        """
        from peft import PeftModel

        with self._lock:
            if adapter.version in self._adapters:
                return
            name = _adapter_name(adapter)
            if name in self._retired:  # unloaded but its weights were still held: serve them again
                self._retired.discard(name)
                self._adapters[adapter.version] = name
                return
            started = time.perf_counter()
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self._model, adapter.path, adapter_name=name)
                    self._peft.eval()
                else:
                    self._peft.load_adapter(adapter.path, adapter_name=name)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise EngineError(
                    f"transformers: cannot load adapter {adapter.version!r} from {adapter.path}: {exc}"
                ) from exc
            self._adapters[adapter.version] = name
            self._delete_retired()
            log.info("transformers: adapter %s loaded in %.2f s", adapter.version, time.perf_counter() - started)

    def unload_adapter(self, adapter: AdapterRef) -> None:
        """Stop serving the adapter and free its weights; unknown adapters are ignored.

        peft cannot delete the last adapter of a ``PeftModel`` (and ``unload()`` would keep its
        ``modules_to_save`` copies in the base), so the last one's weights stay, unused — requests naming it
        already fail — until the next adapter is loaded and takes over as peft's active one.
        """
        with self._lock:
            name = self._adapters.pop(adapter.version, None)
            if name is None or self._peft is None:
                return
            self._retired.add(name)
            self._delete_retired()
            log.info("transformers: adapter %s unloaded", adapter.version)

    def _delete_retired(self) -> None:
        """Delete retired adapters' weights while another adapter can be peft's active one (lock held)."""
        if not self._adapters or self._peft is None:
            return
        if any(active in self._retired for active in self._peft.active_adapters):
            self._peft.set_adapter(next(iter(self._adapters.values())))
        for name in sorted(self._retired):
            self._peft.delete_adapter(name)
        self._retired.clear()

    def loaded_adapters(self) -> list[str]:
        """Versions of the adapters currently loaded."""
        with self._lock:
            return sorted(self._adapters)

    def close(self) -> None:
        """Drop the model; GPU memory is returned when the last reference goes."""
        with self._lock:
            self._peft = None
            self._adapters.clear()
            self._retired.clear()
            if self._device.startswith("cuda"):
                self._torch.cuda.empty_cache()
