"""engines/openai.py: against ``swift deploy`` serving the tiny Qwen2-VL (slow: one server per session), and against
recorded vLLM responses for what a CPU cannot serve (LoRA model names, errors, timeouts)."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_helpers import CAPTION_CONFIG, GROUNDING_CONFIG, MEMO_CAPTION
from PIL import Image
from vllm_standin import VllmStandIn

from ml_backend.engines.base import AdapterRef, EngineError, GenerationRequest
from ml_backend.engines.openai import OpenAIEngine
from ml_backend.holder import ModelHolder
from ml_backend.predictor import Predictor
from ml_backend.protocol import TaskInput
from ml_backend.regions import BoxRegion
from ml_backend.settings import Settings

pytest_plugins = ["backend_fixtures"]

IMAGE = Image.new("RGB", (640, 480), (200, 30, 30))

BOX_TOKENS = [
    ("<|object_ref_start|>", -0.02), ("cat", -0.01), ("<|object_ref_end|>", -0.01), ("<|box_start|>", -0.02),
    ("(", -0.01), ("1", -0.3), ("0", -0.2), ("0", -0.1), (",", -0.01), ("2", -0.3), ("0", -0.1), ("0", -0.1),
    ("),(", -0.01), ("5", -0.4), ("0", -0.1), ("0", -0.1), (",", -0.01), ("6", -0.3), ("0", -0.1), ("0", -0.1),
    (")", -0.01), ("<|box_end|>", -0.02),
]  # fmt: skip
RECORDED_BOX = "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,200),(500,600)<|box_end|>"
# What vLLM 0.x answers to /v1/chat/completions with logprobs for a LoRA served as `--lora-modules p1-v3=...`
# (shape recorded from vLLM's OpenAI server; the model name echoes the LoRA's).
VLLM_LORA_ANSWER: dict[str, Any] = {
    "id": "chatcmpl-5d1c0e5ad7a84b5c9d0e6f6c1a2b3c4d",
    "object": "chat.completion",
    "created": 1795311400,
    "model": "p1-v3",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "reasoning_content": None, "content": RECORDED_BOX, "tool_calls": []},
            "logprobs": {
                "content": [
                    {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []}
                    for token, logprob in BOX_TOKENS
                ]
            },
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 141, "total_tokens": 163, "completion_tokens": 22, "prompt_tokens_details": None},
    "prompt_logprobs": None,
}
VLLM_MODELS = {
    "object": "list",
    "data": [
        {"id": "Qwen/Qwen2-VL-7B-Instruct", "object": "model", "owned_by": "vllm", "root": "Qwen/Qwen2-VL-7B-Instruct",
         "parent": None, "max_model_len": 32768},
        {"id": "p1-v3", "object": "model", "owned_by": "vllm", "root": "/adapters/p1-v3",
         "parent": "Qwen/Qwen2-VL-7B-Instruct", "max_model_len": None},
    ],
}  # fmt: skip
VLLM_NOT_FOUND = {"object": "error", "message": "The model `p1-v9` does not exist.", "type": "NotFoundError",
                  "param": None, "code": 404}  # fmt: skip


class RecordedServer:
    """An httpx transport answering like vLLM; remembers the requests."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=VLLM_MODELS)
        body = json.loads(request.content)
        with self.lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            if body["model"] not in {m["id"] for m in VLLM_MODELS["data"]}:
                return httpx.Response(404, json=VLLM_NOT_FOUND)
            if body.get("top_logprobs"):
                top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in
                       [("out", -0.2), ("Out", -1.5), ("in", -2.0), ("ind", -2.5)]]  # fmt: skip
                answer = json.loads(json.dumps(VLLM_LORA_ANSWER))
                answer["choices"][0]["logprobs"]["content"] = [{"token": "out", "logprob": -0.2, "top_logprobs": top}]
                return httpx.Response(200, json=answer)
            return httpx.Response(200, json=VLLM_LORA_ANSWER)
        finally:
            with self.lock:
                self.in_flight -= 1


def recorded_engine(make_settings: Callable[..., Settings], server: Any, **overrides: Any) -> OpenAIEngine:
    values: dict[str, Any] = {"engine": "openai", "openai_base_url": "http://vllm:8000/v1",
                              "openai_model": "Qwen/Qwen2-VL-7B-Instruct", "model": "Qwen/Qwen2-VL-7B-Instruct",
                              "model_family": "qwen2_vl", "openai_api_key": "sk-local"}  # fmt: skip
    values.update(overrides)
    return OpenAIEngine(make_settings(**values), transport=httpx.MockTransport(server))


def test_lora_is_selected_by_model_name(make_settings: Callable[..., Settings]) -> None:
    server = RecordedServer()
    engine = recorded_engine(make_settings, server)
    adapter = AdapterRef("p1-v3", "p1-v3")
    engine.load_adapter(adapter)
    [generation] = engine.generate([GenerationRequest(IMAGE, "Find the cat.", 64, adapter)])
    sent = server.requests[0]
    assert sent["model"] == "p1-v3"
    assert (sent["temperature"], sent["logprobs"], sent["max_tokens"], sent["skip_special_tokens"]) == (
        0,
        True,
        64,
        False,
    )
    image_part, text_part = sent["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Find the cat."}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent_image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent_image.size == generation.input_size == (644, 476)  # smart resize (28) under the default 1003520
    assert generation.text == RECORDED_BOX and "".join(generation.tokens) == RECORDED_BOX
    assert generation.logprobs[5] == -0.3 and not generation.truncated


def test_the_base_model_name_and_no_special_tokens_flag_for_json_families(
    make_settings: Callable[..., Settings],
) -> None:
    server = RecordedServer()
    engine = recorded_engine(make_settings, server, model_family="qwen3_vl", image_max_pixels=50176)
    [generation] = engine.generate([GenerationRequest(IMAGE, "Describe.", 8)])
    assert server.requests[0]["model"] == "Qwen/Qwen2-VL-7B-Instruct"
    assert "skip_special_tokens" not in server.requests[0]
    assert generation.input_size == (256, 192)  # multiples of 32 for Qwen3-VL, at most 50176 pixels


# --- runtime LoRA loading, against a stand-in for vLLM's server (tests/vllm_standin.py) ---------------------------


@pytest.fixture
def vllm() -> Iterator[VllmStandIn]:
    server = VllmStandIn(base="Qwen/Qwen2-VL-7B-Instruct")
    yield server
    server.close()


def adapter_dir(root: Path, name: str) -> str:
    """A directory with an adapter config, as vLLM checks for before loading it."""
    (root / name).mkdir(parents=True)
    (root / name / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    return str(root / name)


def standin_engine(make_settings: Callable[..., Settings], server: VllmStandIn) -> OpenAIEngine:
    return OpenAIEngine(make_settings(engine="openai", openai_base_url=server.url, openai_model=server.base,
                                      model=server.base, model_family="qwen2_vl"))  # fmt: skip


def test_an_adapter_is_loaded_into_vllm_at_runtime_and_asked_for_by_its_version(
    make_settings: Callable[..., Settings], vllm: VllmStandIn, tmp_path: Path
) -> None:
    engine = standin_engine(make_settings, vllm)
    adapter = AdapterRef("p1-v3", adapter_dir(tmp_path, "p1-v3"))
    engine.load_adapter(adapter)
    assert vllm.posts("load_lora_adapter") == [{"lora_name": "p1-v3", "lora_path": adapter.path}]
    assert "p1-v3" in engine.served_models()
    engine.load_adapter(adapter)  # idempotent: known, nothing sent
    assert len(vllm.posts("load_lora_adapter")) == 1
    [generation] = engine.generate([GenerationRequest(IMAGE, "Describe.", 8, adapter)])
    [base] = engine.generate([GenerationRequest(IMAGE, "Describe.", 8)])
    assert [body["model"] for body in vllm.posts("chat/completions")] == ["p1-v3", "Qwen/Qwen2-VL-7B-Instruct"]
    assert generation.text == base.text == "a caption"
    # Another backend process finds it served and loads nothing.
    other = standin_engine(make_settings, vllm)
    other.load_adapter(adapter)
    assert len(vllm.posts("load_lora_adapter")) == 1
    # Unloading is for the engine that loaded it; the other one's unload leaves the server alone.
    other.unload_adapter(adapter)
    assert vllm.posts("unload_lora_adapter") == []
    engine.unload_adapter(adapter)
    assert vllm.posts("unload_lora_adapter") == [{"lora_name": "p1-v3"}]
    assert "p1-v3" not in engine.served_models()
    engine.close()
    other.close()


def test_a_request_for_an_adapter_another_process_unloaded_loads_it_again(
    make_settings: Callable[..., Settings], vllm: VllmStandIn, tmp_path: Path
) -> None:
    first, second = standin_engine(make_settings, vllm), standin_engine(make_settings, vllm)
    adapter = AdapterRef("p1-v3", adapter_dir(tmp_path, "p1-v3"))
    first.load_adapter(adapter)
    second.load_adapter(adapter)  # served already: second relies on first's load
    first.unload_adapter(adapter)  # e.g. first swapped to p1-v4 before second did
    [generation] = second.generate([GenerationRequest(IMAGE, "Describe.", 8, adapter)])
    assert generation.text == "a caption"
    chats = vllm.posts("chat/completions")
    assert [body["model"] for body in chats] == ["p1-v3", "p1-v3"]  # 404, loaded again, retried once
    assert len(vllm.posts("load_lora_adapter")) == 2
    first.close()
    second.close()


def test_vllms_already_loaded_answer_is_success(
    make_settings: Callable[..., Settings], vllm: VllmStandIn, tmp_path: Path
) -> None:
    """Two backend processes both see the adapter missing and both ask vLLM to load it: the second gets 400."""
    adapter = AdapterRef("p1-v3", adapter_dir(tmp_path, "p1-v3"))
    vllm.after_models = lambda: vllm.register("p1-v3", adapter.path)  # the other process loads it meanwhile
    engine = standin_engine(make_settings, vllm)
    engine.load_adapter(adapter)
    [attempt] = vllm.posts("load_lora_adapter")
    assert attempt == {"lora_name": "p1-v3", "lora_path": adapter.path}
    engine.unload_adapter(adapter)  # not this engine's load: the server keeps it for the other process
    assert vllm.posts("unload_lora_adapter") == [] and "p1-v3" in vllm.loras
    engine.close()


def test_an_adapter_vllm_cannot_load(make_settings: Callable[..., Settings], vllm: VllmStandIn) -> None:
    engine = standin_engine(make_settings, vllm)
    with pytest.raises(EngineError) as info:
        engine.load_adapter(AdapterRef("p1-v9", "/adapters/p1-v9"))
    assert str(info.value) == (
        f"openai: {vllm.url}/ refused to load adapter p1-v9 from /adapters/p1-v9 (HTTP 404: Loading lora p1-v9 "
        "failed: No adapter found for /adapters/p1-v9); the adapter directory must exist at the same path on the "
        "server"
    )
    with pytest.raises(EngineError, match="refused to load adapter p1-v9"):  # a request loads it first, and fails
        engine.generate([GenerationRequest(IMAGE, "x", 4, AdapterRef("p1-v9", "/adapters/p1-v9"))])
    engine.close()


def test_a_server_without_runtime_lora_loading(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    server = VllmStandIn(base="Qwen/Qwen2-VL-7B-Instruct", runtime_lora=False)
    try:
        engine = standin_engine(make_settings, server)
        with pytest.raises(EngineError) as info:
            engine.load_adapter(AdapterRef("p1-v3", adapter_dir(tmp_path, "p1-v3")))
        assert str(info.value).endswith(
            "(HTTP 404: Not Found); the server has no runtime LoRA loading: start vLLM with --enable-lora and "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
        )
        # Adapters the server was started with (vLLM --lora-modules p1-v3=...) are used as they are.
        server.register("p1-v3", "/adapters/p1-v3")
        engine.load_adapter(AdapterRef("p1-v3", "/adapters/p1-v3"))
        [generation] = engine.generate([GenerationRequest(IMAGE, "x", 4, AdapterRef("p1-v3", "/adapters/p1-v3"))])
        assert generation.text == "a caption" and server.posts("chat/completions")[0]["model"] == "p1-v3"
        engine.close()
    finally:
        server.close()


def test_an_unknown_base_model_name(make_settings: Callable[..., Settings], vllm: VllmStandIn) -> None:
    engine = OpenAIEngine(make_settings(engine="openai", openai_base_url=vllm.url, openai_model="qwen-vl",
                                        model="qwen-vl", model_family="qwen2_vl"))  # fmt: skip
    with pytest.raises(EngineError) as info:
        engine.generate([GenerationRequest(IMAGE, "x", 4)])
    assert str(info.value) == "openai: HTTP 404 from the server: The model `qwen-vl` does not exist."
    engine.close()


def test_options_by_first_token_logprobs(make_settings: Callable[..., Settings]) -> None:
    engine = recorded_engine(make_settings, RecordedServer())
    scores = engine.score_options(GenerationRequest(IMAGE, "Indoor or outdoor?"), ["outdoor", "indoor", "studio"])
    assert scores[:2] == [-0.2, -2.5]  # the longest listed token that starts the option
    assert scores[2] == -math.inf  # not among the top 20


def test_concurrency_is_bounded(make_settings: Callable[..., Settings]) -> None:
    server = RecordedServer(delay=0.05)
    engine = recorded_engine(make_settings, server, max_concurrency=2)
    generations = engine.generate([GenerationRequest(IMAGE, f"q{i}", 4) for i in range(6)])
    assert len(generations) == 6 and [r["messages"][0]["content"][1]["text"] for r in server.requests] != []
    assert server.max_in_flight == 2


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (httpx.ReadTimeout("timed out"), "openai: http://vllm:8000/v1/ timed out after 2 s"),
        (httpx.ConnectError("Connection refused"), "openai: http://vllm:8000/v1/: ConnectError: Connection refused"),
    ],
)
def test_timeouts_and_unreachable_servers(
    make_settings: Callable[..., Settings], failure: Exception, message: str
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    engine = recorded_engine(make_settings, fail, engine_timeout=2)
    with pytest.raises(EngineError) as info:
        engine.generate([GenerationRequest(IMAGE, "x", 4)])
    assert str(info.value) == message


def test_missing_configuration(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(EngineError, match="LABELLOOP_OPENAI_BASE_URL is not set"):
        OpenAIEngine(make_settings(engine="openai"))
    with pytest.raises(EngineError, match="set LABELLOOP_MODEL_FAMILY"):
        OpenAIEngine(make_settings(engine="openai", openai_base_url="http://vllm:8000/v1", model="remote-name"))


# --- against a real OpenAI-compatible server: swift deploy with the tiny model ---------------------------------


@pytest.fixture(scope="session")
def swift_server(
    tiny_model: Callable[..., Path], memo_adapter: AdapterRef, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``swift deploy`` serving the tiny Qwen2-VL as ``tiny`` and its memo adapter as ``memo`` on 127.0.0.1."""
    swift = Path(sys.executable).with_name("swift")
    if not swift.exists():
        pytest.fail(f"no swift executable next to {sys.executable}: install the training extra")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path_factory.mktemp("swift-deploy") / "deploy.log"
    env = {**os.environ, "MAX_PIXELS": "50176", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MODELSCOPE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    command = [
        str(swift), "deploy", "--model", str(tiny_model("qwen2_vl")), "--model_type", "qwen2_vl",
        "--template", "qwen2_vl", "--infer_backend", "transformers", "--torch_dtype", "float32",
        "--served_model_name", "tiny", "--adapters", f"memo={memo_adapter.path}",
        "--host", "127.0.0.1", "--port", str(port), "--max_new_tokens", "64",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"swift deploy exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"swift deploy did not answer within 300 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1.0)
        yield url
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        shutil.rmtree(log_path.parent, ignore_errors=True)


def swift_settings(make_settings: Callable[..., Settings], url: str, tiny_model: Callable[..., Path]) -> Settings:
    return make_settings(engine="openai", openai_base_url=url, openai_model="tiny", model=str(tiny_model("qwen2_vl")),
                         model_name="tiny", image_max_pixels=50176, max_new_tokens=48, max_concurrency=2)  # fmt: skip


@pytest.mark.slow
def test_swift_deploy_answers_like_the_in_process_engine(
    swift_server: str, make_settings: Callable[..., Settings], tiny_model: Callable[..., Path],
    shared_engine: Callable[..., Any],
) -> None:  # fmt: skip
    engine = OpenAIEngine(swift_settings(make_settings, swift_server, tiny_model))
    image = Image.new("RGB", (224, 168), (255, 0, 0))  # within 50176 pixels: both engines see it unresized
    request = GenerationRequest(image, "Describe this image.", 6)
    [remote] = engine.generate([request])
    [local] = shared_engine("qwen2_vl").generate([request])
    assert remote.input_size == local.input_size == (224, 168)
    assert remote.tokens == local.tokens
    assert remote.logprobs == pytest.approx(local.logprobs, abs=1e-3)  # same weights, same maths, float32
    engine.close()


@pytest.mark.slow
def test_swift_deploy_serves_the_adapter_by_name_through_the_predictor(
    swift_server: str, make_settings: Callable[..., Settings], tiny_model: Callable[..., Path], tmp_path: Path,
    memo_adapter: AdapterRef,
) -> None:  # fmt: skip
    settings = swift_settings(make_settings, swift_server, tiny_model)
    settings = settings.model_copy(update={"ls_media_dir": tmp_path})
    (tmp_path / "upload" / "1").mkdir(parents=True)
    Image.new("RGB", (90, 60), (20, 120, 220)).save(tmp_path / "upload" / "1" / "a.png")
    holder = ModelHolder(settings)
    predictor = Predictor(settings, holder)
    try:
        holder.activate(4, AdapterRef("memo", memo_adapter.path))  # served as `memo` (swift deploy --adapters)
        task = TaskInput(1, {"image": "/data/upload/1/a.png"})
        [boxes] = predictor.predict([task], GROUNDING_CONFIG, project=4)
        [caption] = predictor.predict([task], CAPTION_CONFIG, project=4)
        [base] = predictor.predict([task], CAPTION_CONFIG, project=5)
    finally:
        predictor.close()
        holder.close()
    [box] = boxes.regions
    assert isinstance(box, BoxRegion) and box.label == "cat" and boxes.model_version == "tiny@memo"
    assert (box.x, box.y, box.width, box.height) == pytest.approx((12.5, 34.6, 46.2, 55.7), abs=0.01)  # MEMO_BOX
    assert (box.original_width, box.original_height) == (90, 60)
    assert caption.regions[0].texts == (MEMO_CAPTION,)  # type: ignore[union-attr]
    assert base.model_version == "tiny@base" and base.ok
