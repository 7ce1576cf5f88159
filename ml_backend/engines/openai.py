"""The remote engine: any OpenAI-compatible server (vLLM, SGLang, LMDeploy, ``swift deploy``).

- **Requests**: ``POST {openai_base_url}/chat/completions`` with the image as a PNG data URL and the prompt,
  ``temperature=0``, ``logprobs=true``; one HTTP call per request, up to ``max_concurrency`` at once (the
  server batches them), each limited to ``engine_timeout`` seconds.
- **Images** are resized here with Qwen's smart resize (``image_min_pixels``/``image_max_pixels``, default
  3136/1003520, sides multiples of 28, or 32 for Qwen3-VL) before sending. The server's processor then keeps
  them as they are (as long as its own ``max_pixels`` is not lower), so the size the model saw — the frame of
  Qwen2.5-VL boxes — is known exactly, and uploads stay small.
- **Adapters** are served under their version id (``AdapterRef.version``; requests say ``model=<version>``).
  :meth:`OpenAIEngine.load_adapter` looks the version up in ``GET /models`` (adapters given at start-up, e.g.
  vLLM ``--lora-modules <version>=<path>`` or ``swift deploy --adapters <version>=<path>``, are simply used) and
  otherwise loads it at run time with vLLM's ``POST /load_lora_adapter {"lora_name": version, "lora_path":
  path}`` (vLLM started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` and ``--enable-lora``; the adapter
  directory must be visible to the server at the same path). vLLM's 400 "has already been loaded" (another
  backend process got there first) is success. :meth:`OpenAIEngine.unload_adapter` sends
  ``POST /unload_lora_adapter`` for the adapters this engine loaded (never for start-up ones). Several backend
  processes share one server, so one may unload an adapter another still serves; a request that then meets
  vLLM's 404 "model does not exist" loads its adapter again and is retried once.
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
        self._served: set[str] = set()  # adapter versions known to be served
        self._loaded: set[str] = set()  # ... of which this engine loaded at run time
        self._lock = threading.Lock()

    # --- HTTP ----------------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._client.request(method, path, json=body)
        except httpx.TimeoutException:
            raise EngineError(f"openai: {self._client.base_url} timed out after {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise EngineError(f"openai: {self._client.base_url}: {type(exc).__name__}: {exc}") from None

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self._send("POST", "chat/completions", body)
        if response.status_code == 404:
            raise _NotServedError(f"openai: HTTP 404 from the server: {_server_message(response)}")
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

    def _chat(self, request: GenerationRequest, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion; an adapter the server lost meanwhile is loaded again and the request retried."""
        try:
            return self._post(body)
        except _NotServedError:
            if request.adapter is None:
                raise
            log.warning("openai: the server no longer serves adapter %s; loading it again", request.adapter.version)
            with self._lock:
                self._served.discard(request.adapter.version)
            self.load_adapter(request.adapter)
            return self._post(body)

    def _body(self, request: GenerationRequest, image_part: dict[str, Any], max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.adapter.version if request.adapter else self._model,
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
        data = self._chat(request, self._body(request, image_part, request.max_new_tokens))
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
        data = self._chat(request, body)
        entries = ((data["choices"][0].get("logprobs") or {}).get("content")) or []
        top = (entries[0].get("top_logprobs") or []) if entries else []
        candidates = [(str(item.get("token", "")).strip().casefold(), _logprob(item)) for item in top]
        scores = []
        for option in options:
            wanted = option.strip().casefold()
            matching = [(len(token), lp) for token, lp in candidates if token and wanted.startswith(token)]
            scores.append(max(matching)[1] if matching else -math.inf)
        return scores

    def served_models(self) -> set[str]:
        """The model names the server lists (``GET /models``): the base and its LoRA adapters.

        Raises:
            EngineError: the server cannot be asked or answers something else than a model list.
        """
        response = self._send("GET", "models")
        try:
            response.raise_for_status()
            return {str(item["id"]) for item in response.json()["data"]}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"openai: cannot list the models of {self._client.base_url}: {exc}") from None

    def load_adapter(self, adapter: AdapterRef) -> None:
        """Make the server serve ``adapter`` under ``adapter.version`` (idempotent): nothing to do when it already
        lists it, else vLLM's runtime ``POST /load_lora_adapter`` with the adapter's directory.

        Raises:
            EngineError: the server cannot be reached or refused; the message names the server and its answer.
        """
        with self._lock:
            if adapter.version in self._served:
                return
        if adapter.version not in self.served_models():
            body = {"lora_name": adapter.version, "lora_path": adapter.path}
            response = self._send("POST", "load_lora_adapter", body)
            message = _server_message(response)
            if response.status_code == 200:
                log.info("openai: %s loaded adapter %s from %s", self._client.base_url, adapter.version, adapter.path)
                with self._lock:
                    self._loaded.add(adapter.version)
            elif not (response.status_code == 400 and "already been loaded" in message):
                raise EngineError(
                    f"openai: {self._client.base_url} refused to load adapter {adapter.version} from {adapter.path} "
                    f"(HTTP {response.status_code}: {message}){_load_hint(response.status_code, message)}"
                )
        with self._lock:
            self._served.add(adapter.version)

    def unload_adapter(self, adapter: AdapterRef) -> None:
        """Unload ``adapter`` from the server if this engine loaded it (``POST /unload_lora_adapter``); adapters the
        server was started with, and ones it no longer has, are left alone.

        Raises:
            EngineError: the server cannot be reached or refused.
        """
        with self._lock:
            self._served.discard(adapter.version)
            if adapter.version not in self._loaded:
                return
            self._loaded.discard(adapter.version)
        response = self._send("POST", "unload_lora_adapter", {"lora_name": adapter.version})
        if response.status_code not in (200, 404):  # 404: "cannot be found", already gone
            raise EngineError(
                f"openai: {self._client.base_url} refused to unload adapter {adapter.version} "
                f"(HTTP {response.status_code}: {_server_message(response)})"
            )
        log.info("openai: %s unloaded adapter %s", self._client.base_url, adapter.version)

    def close(self) -> None:
        """Stop the request threads and close the HTTP client."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


class _NotServedError(EngineError):
    """The server answered 404 to a chat completion: it does not serve the model name asked for."""


def _load_hint(status: int, message: str) -> str:
    if status in (404, 405) and message in ("Not Found", "Method Not Allowed"):
        return (
            "; the server has no runtime LoRA loading: start vLLM with --enable-lora and "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
        )
    return "; the adapter directory must exist at the same path on the server"


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
        message = (
            error.get("message")
            if isinstance(error, dict)
            else error or data.get("message") or data.get("detail") or data  # detail: FastAPI's own errors
        )
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
