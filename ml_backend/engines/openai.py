"""The remote engine: any OpenAI-compatible server (vLLM, SGLang, LMDeploy, ``swift deploy``).

- **Requests**: ``POST {openai_base_url}/chat/completions`` with the image as a PNG data URL and the prompt,
  ``temperature=0``, ``logprobs=true``; one HTTP call per request, up to ``max_concurrency`` at once (the
  server batches them), each limited to ``engine_timeout`` seconds.
- **Images** are resized here with Qwen's smart resize (``image_min_pixels``/``image_max_pixels``, default
  3136/1003520, sides multiples of 28, or 32 for Qwen3-VL) before sending. The server's processor then keeps
  them as they are (as long as its own ``max_pixels`` is not lower), so the size the model saw — the frame of
  Qwen2.5-VL boxes — is known exactly, and uploads stay small.
- **Adapters** are served model names: ``AdapterRef.path`` is the name the server knows the LoRA under (vLLM
  ``--lora-modules name=path``, ``swift deploy --adapters name=path``); :meth:`OpenAIEngine.load_adapter` checks
  that ``/models`` lists it.
- **Special tokens**: Qwen2-VL writes boxes with special tokens, which servers strip by default; requests for
  that family send vLLM's ``skip_special_tokens: false`` (servers that ignore it still work: the parser reads
  the bare ``label(x1,y1),(x2,y2)`` form too).
- **Options (limitation)**: the chat API cannot score a given answer, so an option's log-probability is that of
  its *first token* among the ``top_logprobs`` (20) of the answer's first position: the longest listed token
  that starts the option (case-insensitive). Options sharing a first token get the same score (the first of them
  wins); an option whose first token is not among the 20 gets ``-inf``. Exact scoring needs the
  ``transformers`` engine (or a server's ``prompt_logprobs``, not used here for portability).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ml_backend.engines.base import AdapterRef, EngineError, Generation, GenerationRequest
from ml_backend.regions import PATCH_FACTOR, smart_resize

if TYPE_CHECKING:
    from PIL import Image

    from ml_backend.settings import Family, Settings

log = logging.getLogger(__name__)

DEFAULT_MIN_PIXELS = 3136
DEFAULT_MAX_PIXELS = 1003520
TOP_LOGPROBS = 20


class OpenAIEngine:
    """Talks to an OpenAI-compatible chat-completions server. Thread-safe."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        """Prepare the client; nothing is sent until the first request.

        Raises:
            EngineError: ``openai_base_url`` is not set, or the family is unknown (set ``model_family``, or point
                ``model`` at a local copy of the model's config).
        """
        if not settings.openai_base_url:
            raise EngineError("openai: LABELLOOP_OPENAI_BASE_URL is not set (e.g. http://vllm:8000/v1)")
        self.family: Family = settings.model_family or _family_from(settings.model)
        self.base_name = settings.model_label
        self._model = settings.openai_model or settings.model
        self._min_pixels = settings.image_min_pixels or DEFAULT_MIN_PIXELS
        self._max_pixels = settings.image_max_pixels or DEFAULT_MAX_PIXELS
        headers = {"Content-Type": "application/json"}
        if settings.openai_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.openai_api_key.get_secret_value()}"
        self._timeout = settings.engine_timeout
        self._client = httpx.Client(
            base_url=settings.openai_base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.engine_timeout, connect=min(10.0, settings.engine_timeout)),
            trust_env=False,
            transport=transport,
            limits=httpx.Limits(max_connections=settings.max_concurrency * 2),
        )
        self._pool = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="labelloop-openai")
        self._served: set[str] = set()
        self._lock = threading.Lock()

    # --- HTTP ----------------------------------------------------------------------------------------------

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post("chat/completions", json=body)
        except httpx.TimeoutException:
            raise EngineError(f"openai: {self._client.base_url} timed out after {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise EngineError(f"openai: {self._client.base_url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise EngineError(f"openai: HTTP {response.status_code} from the server: {_server_message(response)}")
        try:
            data: dict[str, Any] = response.json()
            data["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EngineError("openai: the server's answer has no choices") from None
        return data

    def _image_part(self, image: Image.Image) -> tuple[dict[str, Any], tuple[int, int]]:
        from PIL import Image as PILImage

        width, height = image.size
        try:
            size = smart_resize(width, height, factor=PATCH_FACTOR[self.family], min_pixels=self._min_pixels,
                                max_pixels=self._max_pixels)  # fmt: skip
        except ValueError as exc:
            raise EngineError(f"openai: {exc}") from exc
        resized = image.convert("RGB")
        if resized.size != size:
            resized = resized.resize(size, PILImage.Resampling.BICUBIC)
        buffer = io.BytesIO()
        resized.save(buffer, format="PNG", compress_level=1)
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return {"type": "image_url", "image_url": {"url": url}}, size

    def _body(self, request: GenerationRequest, image_part: dict[str, Any], max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.adapter.path if request.adapter else self._model,
            "messages": [{"role": "user", "content": [image_part, {"type": "text", "text": request.prompt}]}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "logprobs": True,
            "stream": False,
        }
        if self.family == "qwen2_vl":
            body["skip_special_tokens"] = False
        return body

    # --- engine API ----------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One chat completion per request, ``max_concurrency`` at a time; results in request order.

        Raises:
            EngineError: a request failed (timeout, HTTP error, unknown model name); the message names the cause.
        """
        return list(self._pool.map(self._generate_one, requests))

    def _generate_one(self, request: GenerationRequest) -> Generation:
        image_part, size = self._image_part(request.image)
        data = self._post(self._body(request, image_part, request.max_new_tokens))
        choice = data["choices"][0]
        text = str((choice.get("message") or {}).get("content") or "")
        entries = ((choice.get("logprobs") or {}).get("content")) or []
        tokens = tuple(str(entry.get("token", "")) for entry in entries)
        logprobs = tuple(_logprob(entry) for entry in entries)
        usage = data.get("usage") or {}
        return Generation(
            text=text,
            tokens=tokens,
            logprobs=logprobs,
            input_size=size,
            truncated=choice.get("finish_reason") == "length",
            extra={"prompt_tokens": float(usage.get("prompt_tokens", 0) or 0)},
        )

    def score_options(self, request: GenerationRequest, options: Sequence[str]) -> list[float]:
        """First-token log-probability of each option (see the module docstring's limitation).

        Raises:
            EngineError: the request failed.
        """
        image_part, _ = self._image_part(request.image)
        body = self._body(request, image_part, 1)
        body["top_logprobs"] = TOP_LOGPROBS
        body.pop("skip_special_tokens", None)
        data = self._post(body)
        entries = ((data["choices"][0].get("logprobs") or {}).get("content")) or []
        top = (entries[0].get("top_logprobs") or []) if entries else []
        candidates = [(str(item.get("token", "")).strip().casefold(), _logprob(item)) for item in top]
        scores = []
        for option in options:
            wanted = option.strip().casefold()
            matching = [(len(token), lp) for token, lp in candidates if token and wanted.startswith(token)]
            scores.append(max(matching)[1] if matching else -math.inf)
        return scores

    def load_adapter(self, adapter: AdapterRef) -> None:
        """Check that the server serves ``adapter.path`` as a model name (idempotent).

        Raises:
            EngineError: the server does not list it, or cannot be asked.
        """
        with self._lock:
            if adapter.path in self._served:
                return
        try:
            response = self._client.get("models")
            response.raise_for_status()
            names = {str(item.get("id")) for item in response.json().get("data", [])}
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise EngineError(f"openai: cannot list the server's models: {exc}") from None
        if adapter.path not in names:
            raise EngineError(
                f"openai: the server does not serve {adapter.path!r} (adapter {adapter.version}); it serves "
                f"{', '.join(sorted(names)) or 'nothing'}"
            )
        with self._lock:
            self._served.add(adapter.path)

    def unload_adapter(self, adapter: AdapterRef) -> None:
        """Forget the adapter (the server keeps serving it; unloading there is the server's business)."""
        with self._lock:
            self._served.discard(adapter.path)

    def close(self) -> None:
        """Stop the request threads and close the HTTP client."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _logprob(entry: Any) -> float:
    try:
        value = float(entry.get("logprob"))
    except (TypeError, ValueError, AttributeError):
        return -math.inf
    return value if not math.isnan(value) else -math.inf


def _server_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error or data.get("message") or data
        return str(message)[:200]
    return str(data)[:200]


def _family_from(model: str) -> Family:
    from ml_backend.settings import FAMILIES

    config = Path(model) / "config.json"
    try:
        model_type = json.loads(config.read_text())["model_type"]
    except (OSError, ValueError, KeyError):
        raise EngineError(
            "openai: set LABELLOOP_MODEL_FAMILY (qwen2_vl, qwen2_5_vl or qwen3_vl): the model family cannot be "
            f"read from {config}"
        ) from None
    if model_type not in FAMILIES:
        raise EngineError(f"openai: model_type {model_type!r} in {config} is not one of {', '.join(FAMILIES)}")
    family: Family = model_type
    return family
