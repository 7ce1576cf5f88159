"""labelloop's one typed configuration.

`Settings` is built once at a process edge (the CLI, the WSGI entry point, the RQ worker) and passed down;
nothing else reads the environment. Every field can be set as ``LABELLOOP_<FIELD>`` (case-insensitive) or from
a ``.env`` file, and tests pass keyword arguments. A bad value fails at start-up with pydantic's message, which
names the variable, what was expected and what came; :func:`load_settings` turns it into a
:class:`~ml_backend.exceptions.ConfigError` with the ``LABELLOOP_`` names users actually type.

Sections (in field order): storage, Label Studio, model and engine, inference, images, HTTP serving,
prediction cache, retraining loop, training (ms-swift), evaluation, export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ml_backend.exceptions import ConfigError

ENV_PREFIX = "LABELLOOP_"

Family = Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
FAMILIES: tuple[Family, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def _split_csv(value: Any) -> Any:
    """Accept ``a,b,c`` from the environment as well as a list from code."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything labelloop can be told. Field descriptions become the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- storage -------------------------------------------------------------------------------------------
    data_dir: Path = Field(
        Path(".labelloop"),
        description="Where runs, adapters, the model registry and fetched images live.",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis for the prediction cache, review counts, locks and RQ queues.",
    )
    redis_prefix: str = Field(
        "labelloop", description="Namespace of labelloop's own Redis keys (RQ keeps its own `rq:` keys)."
    )
    queue_name: str = Field("labelloop", description="RQ queue the worker listens on.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")

    # --- Label Studio --------------------------------------------------------------------------------------
    ls_url: str | None = Field(
        None,
        description="Label Studio base URL, e.g. http://127.0.0.1:8080 (used for images, the API and setup).",
    )
    ls_api_key: SecretStr | None = Field(
        None,
        description="Label Studio API key: a legacy token (sent as `Token`) or a personal access token "
        "(refreshed into a short-lived `Bearer` access token). Never logged.",
    )
    ls_local_files_root: Path | None = Field(
        None,
        description="LOCAL_FILES_DOCUMENT_ROOT of Label Studio when mounted here: `/data/local-files/?d=` "
        "images are read from disk instead of over HTTP.",
    )
    ls_media_dir: Path | None = Field(
        None,
        description="Label Studio's media directory when mounted here: `/data/upload/` images are read from disk.",
    )

    # --- model and engine ----------------------------------------------------------------------------------
    model: str = Field(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        description="Base model: a local directory or a hub id (the engine loads it; the tiny model in tests).",
    )
    model_family: Family | None = Field(
        None, description="qwen2_vl, qwen2_5_vl or qwen3_vl; read from the model's config.json when unset."
    )
    model_name: str | None = Field(
        None, description="Short name of the base model in model_version strings; defaults to the path's name."
    )
    engine: Literal["transformers", "openai"] = Field(
        "transformers",
        description="`transformers` runs the model in-process; `openai` calls an OpenAI-compatible server "
        "(vLLM, SGLang, LMDeploy, swift deploy).",
    )
    device: str = Field("auto", description="torch device for the transformers engine: auto, cpu, cuda, cuda:1.")
    torch_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype for the transformers engine (auto: bfloat16 on GPU, float32 on CPU)."
    )
    openai_base_url: str | None = Field(
        None, description="Base URL of the OpenAI-compatible server, e.g. http://vllm:8000/v1."
    )
    openai_api_key: SecretStr | None = Field(None, description="API key for the OpenAI-compatible server.")
    openai_model: str | None = Field(
        None, description="Served model name of the base model on the OpenAI-compatible server."
    )

    # --- inference -----------------------------------------------------------------------------------------
    max_new_tokens: int = Field(256, ge=1, le=8192, description="Generation limit per answer.")
    batch_size: int = Field(8, ge=1, le=256, description="Tasks per generation batch.")
    max_concurrency: int = Field(
        2, ge=1, le=256, description="Engine calls in flight at once (requests beyond wait their turn)."
    )
    engine_timeout: float = Field(300.0, gt=0, description="Seconds before an engine call is abandoned.")
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description='Prompt template per control name, JSON: {"caption": "Describe the image in one sentence."}; '
        "placeholders {question}, {options}, {labels}, {name}, {how}. A control's own `prompt` attribute in the "
        "label config wins over this.",
    )
    marks_detect: bool = Field(
        True,
        description="Pre-annotate the marks drawn on screenshots with the marks detector: a RectangleLabels control "
        "with the marks label gets one box per detected mark, and the model is asked only for its other labels "
        "(false: the model is asked for the marks label too).",
    )
    predict_deadline: float = Field(
        80.0,
        gt=0,
        description="Seconds one /predict request may spend before answering what is done (Label Studio waits "
        "100 s); tasks not reached get no prediction and are asked again by the next request or the bulk job.",
    )

    # --- images --------------------------------------------------------------------------------------------
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts (or host:port) besides Label Studio's own that images may be "
        "fetched from. Private, loopback and link-local addresses are refused unless listed here.",
    )
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1024, description="Largest image download accepted, in bytes.")
    max_image_pixels: int = Field(
        80_000_000, ge=1, description="Largest image accepted, in pixels (decompression-bomb guard)."
    )
    fetch_timeout: float = Field(15.0, gt=0, description="Seconds allowed for one image download.")
    fetch_workers: int = Field(8, ge=1, le=64, description="Images fetched in parallel for one request.")
    image_min_pixels: int | None = Field(
        None,
        ge=784,
        description="Least pixels of the model's resized input (Qwen smart resize). transformers: overrides the "
        "processor's; openai: images are resized to fit before sending (default 3136).",
    )
    image_max_pixels: int | None = Field(
        None,
        ge=784,
        description="Most pixels of the model's resized input. transformers: overrides the processor's; openai: "
        "images are resized to fit before sending (default 1003520); keep it at or below the server's limit.",
    )

    # --- HTTP serving --------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `labelloop serve` binds.")
    port: int = Field(9090, ge=1, le=65535, description="Port `labelloop serve` binds.")
    threads: int = Field(8, ge=1, le=256, description="gunicorn threads in the single serving process.")
    backend_url: str | None = Field(
        None,
        description="URL at which Label Studio reaches this backend; `labelloop setup` connects it and registers "
        "<url>/webhook. Default http://<host>:<port> (127.0.0.1 when binding all addresses).",
    )
    basic_auth_user: str | None = Field(None, description="User for HTTP basic auth on the endpoints.")
    basic_auth_password: SecretStr | None = Field(None, description="Password for HTTP basic auth.")
    bearer_token: SecretStr | None = Field(
        None, description="Bearer token accepted on the endpoints (in addition to basic auth, if set)."
    )
    access_log: bool = Field(True, description="gunicorn's access log (one line per request) on stdout.")
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body accepted by the endpoints, in bytes."
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Shared secret Label Studio must send in the X-Labelloop-Secret header of webhooks.",
    )

    # --- prediction cache ----------------------------------------------------------------------------------
    cache_ttl: int = Field(
        7 * 24 * 3600, ge=0, description="Seconds a cached prediction is kept (0 disables the cache)."
    )

    # --- retraining loop -----------------------------------------------------------------------------------
    min_new_reviews: int = Field(
        50, ge=1, description="Reviewed annotations since the last training that trigger a new one."
    )
    cooldown_seconds: int = Field(3600, ge=0, description="Least time between two trainings of a project.")
    review_control: str = Field(
        "review", description="Name of the Choices control holding the review verdict, when the config has one."
    )
    review_accept: str = Field("accept", description="The review choice that marks an annotation accepted.")
    reconcile_interval: int = Field(
        600, ge=10, description="Seconds between scheduled reconciliations of review counts from the LS API."
    )
    reconcile_after: int = Field(
        60,
        ge=0,
        description="An annotation event makes the worker reconcile its project from the LS API when the last "
        "reconciliation is older than this many seconds, so reviews that sent no webhook (imports) count soon "
        "(0: only the threshold and the periodic reconciliation ask).",
    )
    heartbeat_ttl: int = Field(
        60,
        ge=3,
        description="Seconds without a heartbeat after which a running training is declared lost (its worker "
        "died): the run is marked failed, its reviews return to the count and the project can train again.",
    )
    train_retries: int = Field(
        3, ge=0, le=20, description="RQ retries of a training whose export could not reach Label Studio."
    )
    retry_delay: int = Field(
        60, ge=0, description="Seconds before the first retry (0: at once); each next one waits twice as long."
    )
    swap_poll_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between a backend's checks of the registry for new active versions (the Redis "
        "message makes swaps immediate; the poll only covers a missed message).",
    )

    # --- training (ms-swift) -------------------------------------------------------------------------------
    lora_rank: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    epochs: float = Field(3.0, gt=0, description="Training epochs.")
    learning_rate: float = Field(1e-4, gt=0, description="Learning rate.")
    train_batch_size: int = Field(1, ge=1, description="Per-device training batch size.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (overrides epochs).")
    max_pixels: int = Field(
        1003520, ge=3136, description="MAX_PIXELS for ms-swift's image resize (1003520 = 1280 visual tokens)."
    )
    freeze_vit: bool = Field(True, description="Keep the vision tower frozen while training.")
    modules_to_save: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated modules trained in full beside LoRA (e.g. lm_head,embed_tokens).",
    )
    swift_extra_args: str = Field(
        "",
        description="Extra `swift sft` arguments passed through verbatim (e.g. `--deepspeed zero2`).",
    )
    train_nproc: int = Field(
        1,
        ge=1,
        le=64,
        description="Training processes on the worker's machine, one per GPU (what ms-swift calls NPROC_PER_NODE): "
        "above 1, `swift sft` runs data-parallel under torchrun (`--standalone --nproc_per_node N`) on the "
        "worker's CUDA_VISIBLE_DEVICES; 1 runs one process.",
    )
    gradient_checkpointing: bool = Field(
        True, description="Trade compute for memory while training (turn off for tiny models on CPU)."
    )
    train_logging_steps: int = Field(1, ge=1, description="Steps between loss records in logging.jsonl.")
    train_timeout: int = Field(6 * 3600, ge=60, description="Seconds before a training run is killed.")
    keep_versions: int = Field(5, ge=1, description="Adapters kept on disk (older ones are pruned).")

    # --- evaluation ----------------------------------------------------------------------------------------
    promote_margin: float = Field(
        0.0, ge=0, le=1, description="A candidate is promoted unless its score is below current - margin."
    )
    eval_max_tasks: int = Field(
        200, ge=1, description="Most held-out tasks evaluated per model (the first ones of the val split)."
    )
    eval_iou: float = Field(0.5, gt=0, le=1, description="IoU at which a predicted box matches a reviewed one.")
    eval_timeout: int = Field(
        3600, ge=10, description="Seconds the evaluation of candidate and current may take (added to the job's limit)."
    )

    # --- export --------------------------------------------------------------------------------------------
    max_side: int = Field(1024, ge=28, description="Exported images are resized so the longer side fits.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of source images put in val.jsonl.")
    seed: int = Field(0, description="Seed for the train/val split.")
    redact_label: str = Field("redact", description="Regions with this label are blurred and never exported.")
    redact_mode: Literal["pixelate", "blur", "fill"] = Field(
        "pixelate", description="How redacted regions are hidden in exported images."
    )
    marks_label: str = Field(
        "marks", description="RectangleLabels label for marks drawn on screenshots (marked-screenshot configs)."
    )
    near_dup_distance: int = Field(
        4,
        ge=-1,
        le=64,
        description="Perceptual-hash Hamming distance at which two exported images count as near duplicates "
        "(-1: near-duplicate detection off).",
    )
    min_caption_chars: int = Field(3, ge=0, description="Exported captions and descriptions need this many characters.")
    min_answer_chars: int = Field(1, ge=0, description="Exported VQA answers need this many characters.")
    vqa_mode: Literal["multi_turn", "per_pair"] = Field(
        "multi_turn", description="VQA pairs of an image as one conversation or one row per question."
    )
    export_workers: int = Field(0, ge=0, description="Image worker processes of the exporter (0: one per core).")

    @field_validator("allowed_hosts", "modules_to_save", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("ls_url", "openai_base_url", "backend_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:8080, got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected redis://host:port/db, got {value!r}")
        return value

    @property
    def model_label(self) -> str:
        """The base model's short name as it appears in ``model_version`` strings."""
        return self.model_name or Path(self.model.rstrip("/")).name


_SECRET_WORDS = ("key", "password", "token", "secret")


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (and ``.env``), with keyword overrides.

    Raises:
        ConfigError: a value is invalid; the message names each ``LABELLOOP_`` variable, what was expected
            and what came.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "?"
            shown = "<hidden>" if any(word in field for word in _SECRET_WORDS) else repr(err.get("input"))
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']} (got {shown})")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from exc
