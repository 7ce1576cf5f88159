"""A stand-in for vLLM's OpenAI-compatible server (vLLM needs a GPU): a real HTTP server on 127.0.0.1 answering the
routes labelloop uses as vLLM answers them, with runtime LoRA updating on (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).

What is reproduced, from vLLM's sources (``entrypoints/openai/models/serving.py``: ``OpenAIServingModels``,
``entrypoints/serve/lora/api_router.py``, ``entrypoints/serve/engine/protocol.py``: ``ErrorResponse``):

- ``GET /v1/models``: the base model, then one card per loaded LoRA (``id`` its name, ``root`` its path,
  ``parent`` the base);
- ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path", "load_inplace"?}``: 200 with the plain-text
  ``Success: LoRA adapter '<name>' added successfully.``; 400 when a field is missing, or when the name is already
  loaded and ``load_inplace`` is not set ("has already been loaded. If you want to load the adapter in place, set
  'load_inplace' to True."); 404 ``Loading lora <name> failed: No adapter found for <path>`` when the directory
  holds no adapter;
- ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``: 200 ``... removed successfully.``; 404 "cannot be found";
- ``POST /v1/chat/completions``: 404 "The model `<name>` does not exist." for a name that is neither the base nor a
  loaded LoRA, else the recorded answer with the model name echoed;
- errors are vLLM's ``ErrorResponse`` JSON, ``{"error": {"message", "type", "param", "code"}}``; a route that
  does not exist (runtime LoRA updating off) is FastAPI's ``404 {"detail": "Not Found"}``; a body that is not
  JSON is refused with 415 (vLLM's ``validate_json_request``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# A chat completion as vLLM answers it (logprobs requested), content and model filled in per request.
CHAT_ANSWER: dict[str, Any] = {
    "id": "chatcmpl-5d1c0e5ad7a84b5c9d0e6f6c1a2b3c4d",
    "object": "chat.completion",
    "created": 1795311400,
    "model": "",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "reasoning_content": None, "content": "", "tool_calls": []},
            "logprobs": {"content": []},
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 141, "total_tokens": 143, "completion_tokens": 2, "prompt_tokens_details": None},
    "prompt_logprobs": None,
}


def error(message: str, kind: str, code: int) -> dict[str, Any]:
    """vLLM's ErrorResponse body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class VllmStandIn:
    """``VllmStandIn(base="tiny")``; ``url`` is the ``/v1`` base URL. Records every request in ``requests`` as
    ``(method, path, body)``. ``after_models`` (optional) runs after a model list is computed and before it is sent
    (to stage a race with another client)."""

    def __init__(self, base: str = "tiny", *, runtime_lora: bool = True, content: str = "a caption") -> None:
        self.base = base
        self.runtime_lora = runtime_lora
        self.content = content
        self.loras: dict[str, str] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.after_models: Callable[[], None] | None = None
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any) -> None:
                text = body if isinstance(body, str) else json.dumps(body)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8" if isinstance(body, str)
                                 else "application/json")  # fmt: skip
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stand_in.requests.append(("GET", self.path, None))
                if self.path != "/v1/models":
                    self._send(404, {"detail": "Not Found"})
                    return
                answer = stand_in.models()
                if stand_in.after_models is not None:
                    stand_in.after_models()
                self._send(200, answer)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                stand_in.requests.append(("POST", self.path, body))
                routes = {"/v1/chat/completions": stand_in.chat}
                if stand_in.runtime_lora:
                    routes |= {"/v1/load_lora_adapter": stand_in.load, "/v1/unload_lora_adapter": stand_in.unload}
                route = routes.get(self.path)
                if route is None:
                    self._send(404, {"detail": "Not Found"})
                elif not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    self._send(415, {"detail": "Unsupported Media Type: Only 'application/json' is allowed"})
                else:
                    self._send(*route(body))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # --- vLLM's behaviour --------------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        with self.lock:
            cards = [{"id": self.base, "object": "model", "created": 1795311400, "owned_by": "vllm", "root": self.base,
                      "parent": None, "max_model_len": 32768}]  # fmt: skip
            cards += [{"id": name, "object": "model", "created": 1795311400, "owned_by": "vllm", "root": path,
                       "parent": self.base, "max_model_len": None} for name, path in self.loras.items()]  # fmt: skip
        return {"object": "list", "data": cards}

    def register(self, name: str, path: str) -> None:
        """Load a LoRA as another client (or ``--lora-modules name=path`` at start-up) would."""
        with self.lock:
            self.loras[name] = path

    def load(self, body: dict[str, Any]) -> tuple[int, Any]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return 400, error("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        with self.lock:
            if name in self.loras and not body.get("load_inplace"):
                message = (f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in "
                           "place, set 'load_inplace' to True.")  # fmt: skip
                return 400, error(message, "InvalidUserInput", 400)
            if not (Path(path) / "adapter_config.json").is_file():
                return 404, error(f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError", 404)
            self.loras[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        if not name:
            return 400, error("'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput", 400)
        with self.lock:
            if name not in self.loras:
                return 404, error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
            del self.loras[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def chat(self, body: dict[str, Any]) -> tuple[int, Any]:
        model = body.get("model")
        with self.lock:
            known = model == self.base or model in self.loras
        if not known:
            return 404, error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        answer = json.loads(json.dumps(CHAT_ANSWER))
        answer["model"] = model
        answer["choices"][0]["message"]["content"] = self.content
        return 200, answer

    # --- test helpers --------------------------------------------------------------------------------------

    def posts(self, path: str) -> list[Any]:
        """Bodies of the POSTs to ``/v1/<path>``, in order."""
        return [body for method, route, body in self.requests if method == "POST" and route == f"/v1/{path}"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
