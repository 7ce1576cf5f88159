"""LoRA SFT with ms-swift, as a subprocess: the one place labelloop talks to ``swift sft``.

``python -m swift.cli.sft`` runs in its own session (process group) with stdout and stderr streamed to
``<run dir>/train.log`` as they are written; progress comes from ms-swift's ``logging.jsonl``. The child gets
``PR_SET_PDEATHSIG`` so it dies with the process that started it (a worker killed with SIGKILL takes its training
with it), and on cancel or timeout the whole group gets SIGTERM, then SIGKILL after a grace period. Arguments
come from :class:`~ml_backend.settings.Settings` (model, family, LoRA rank/alpha, epochs or max_steps, learning
rate, batch, MAX_PIXELS, freeze_vit, modules_to_save) plus ``swift_extra_args`` verbatim, so DeepSpeed or
anything ms-swift accepts can be passed through.

**Several GPUs** (``train_nproc`` > 1): ``python -m swift.cli.sft`` alone runs one process whatever
``NPROC_PER_NODE`` says; only ms-swift's launcher (``swift sft``, ``swift/cli/main.py``) turns ``NPROC_PER_NODE``
into ``python -m torch.distributed.run --nproc_per_node N <swift/cli/sft.py> ...``. labelloop builds that torchrun
command itself rather than going through the ``swift`` wrapper, whose ``subprocess.run`` child would outlive a
killed wrapper: ``python -m torch.distributed.run --standalone --nproc_per_node N --module swift.cli.sft ...``
(``--standalone``: a free rendezvous port, so two trainings on one machine do not both want 29500; ``--module``:
the same ``sys.path`` as the one-process command). torchrun is the child in its own session; it starts each rank
in a session *of its own*, so cancel and timeout signal the groups of every descendant too (taken before the
first signal, as ranks are re-parented once torchrun exits), and the death signal from a dying worker is SIGTERM,
which torchrun handles by stopping its ranks (SIGKILL would orphan them).

The environment is offline (``HF_HUB_OFFLINE`` and friends, ``--check_model false``: ms-swift otherwise asks
ModelScope about the model), and ``--dataloader_num_workers 0`` avoids a forked data loader.

Failures raise :class:`TrainingError` (non-zero exit, or no complete adapter at the end) carrying the tail of
``train.log``; :class:`TrainingCancelledError` and :class:`TrainingTimeoutError` are its subclasses.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ml_backend.exceptions import ConfigError, LabelloopError
from ml_backend.registry import adapter_problem
from ml_backend.settings import FAMILIES, Family, Settings

log = logging.getLogger(__name__)

KILL_GRACE = 10.0
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MODELSCOPE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}
_PR_SET_PDEATHSIG = 1


class TrainingError(LabelloopError):
    """``swift sft`` failed; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class TrainingCancelledError(TrainingError):
    """The run was cancelled; the process group was killed."""


class TrainingTimeoutError(TrainingError):
    """The run exceeded ``train_timeout``; the process group was killed."""


@dataclass(frozen=True)
class Progress:
    """One ms-swift log line: step of max_steps, loss and learning rate when logged."""

    step: int
    max_steps: int
    loss: float | None = None
    learning_rate: float | None = None


@dataclass(frozen=True)
class TrainingResult:
    """A finished ``swift sft``: the final checkpoint (a complete peft adapter) and what was logged."""

    adapter_dir: Path
    output_dir: Path
    log_path: Path
    command: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0
    train_runtime: float | None = None
    wall_seconds: float = 0.0


def resolve_family(settings: Settings) -> Family:
    """The base model's family: ``model_family`` if set, else ``model_type`` in the model directory's config.json.

    Raises:
        ConfigError: neither says qwen2_vl, qwen2_5_vl or qwen3_vl (a hub id needs ``LABELLOOP_MODEL_FAMILY``).
    """
    if settings.model_family:
        return settings.model_family
    config = Path(settings.model) / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"LABELLOOP_MODEL_FAMILY: not set and {config} is unreadable ({exc}); set it to one of "
            f"{', '.join(FAMILIES)}"
        ) from exc
    if model_type not in FAMILIES:
        raise ConfigError(f"LABELLOOP_MODEL_FAMILY: {config} says model_type {model_type!r}; expected {FAMILIES}")
    family: Family = model_type
    return family


def training_dtype(settings: Settings) -> str:
    """float32 on CPU, bfloat16 on CUDA, unless ``torch_dtype`` says otherwise (imports torch when auto)."""
    if settings.torch_dtype != "auto":
        return settings.torch_dtype
    if settings.device.startswith("cpu"):
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def launcher(settings: Settings, python: str = sys.executable) -> list[str]:
    """How ``swift sft`` is started: ``python -m swift.cli.sft`` for one process, else under torchrun with
    ``train_nproc`` ranks (see the module docstring)."""
    if settings.train_nproc <= 1:
        return [python, "-m", "swift.cli.sft"]
    return [
        python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(settings.train_nproc),
        "--module", "swift.cli.sft",
    ]  # fmt: skip


def sft_command(
    settings: Settings,
    dataset: Path,
    output_dir: Path,
    *,
    python: str = sys.executable,
    dtype: str | None = None,
) -> list[str]:
    """The command training ``dataset`` (an ms-swift JSONL) into ``output_dir``: :func:`launcher` and the
    ``swift sft`` arguments.

    Raises:
        ConfigError: the model family cannot be resolved, or ``swift_extra_args`` does not parse as shell words.
    """
    family = resolve_family(settings)
    dtype = dtype or training_dtype(settings)
    flag = {True: "true", False: "false"}
    args = [
        *launcher(settings, python),
        "--model", settings.model, "--model_type", family, "--template", family,
        "--tuner_type", "lora", "--dataset", str(dataset), "--output_dir", str(output_dir),
        "--lora_rank", str(settings.lora_rank), "--lora_alpha", str(settings.lora_alpha),
        "--learning_rate", str(settings.learning_rate), "--num_train_epochs", str(settings.epochs),
        "--max_steps", str(settings.max_steps or -1),
        "--per_device_train_batch_size", str(settings.train_batch_size),
        "--gradient_accumulation_steps", str(settings.grad_accum),
        "--freeze_vit", flag[settings.freeze_vit],
        "--torch_dtype", dtype, "--fp16", "false", "--bf16", flag[dtype == "bfloat16"],
        "--gradient_checkpointing", flag[settings.gradient_checkpointing],
        "--dataloader_num_workers", "0", "--dataset_num_proc", "1", "--split_dataset_ratio", "0",
        "--eval_strategy", "no", "--report_to", "none", "--check_model", "false",
        "--logging_steps", str(settings.train_logging_steps), "--save_strategy", "steps", "--save_steps", "1000000000",
        "--save_only_model", "true", "--save_total_limit", "1", "--add_version", "false",
        "--seed", str(settings.seed), "--data_seed", str(settings.seed),
    ]  # fmt: skip
    if settings.modules_to_save:
        args += ["--modules_to_save", *settings.modules_to_save]
    try:
        args += shlex.split(settings.swift_extra_args)
    except ValueError as exc:
        raise ConfigError(f"LABELLOOP_SWIFT_EXTRA_ARGS: not valid shell words ({exc})") from exc
    return args


def sft_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ``base`` (default: ours) plus offline switches, MAX_PIXELS and
    ``QWENVL_BBOX_FORMAT=legacy``.

    ``LABELLOOP_*`` variables are dropped: the child needs none of them and some hold secrets. The box format is
    pinned because the exporter's grounding rows (``<ref-object><bbox>``) are written for ms-swift's legacy
    rendering, the Qwen-VL box tokens the backend's parser reads (``regions.py``); a ``new`` left in the worker's
    environment would silently teach another syntax.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("LABELLOOP_")}
    env.update(OFFLINE_ENV)
    env["MAX_PIXELS"] = str(settings.max_pixels)
    env["QWENVL_BBOX_FORMAT"] = "legacy"
    return env


def read_logging(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ms-swift's ``logging.jsonl`` (unparsable lines, e.g. one being written, are skipped)."""
    rows: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows


def loss_curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, loss) pairs from logging.jsonl rows."""
    points = []
    for row in history:
        step = _step(row)
        if step is not None and isinstance(row.get("loss"), int | float):
            points.append((step[0], float(row["loss"])))
    return points


def _step(row: dict[str, Any]) -> tuple[int, int] | None:
    raw = row.get("global_step/max_steps")
    if not isinstance(raw, str) or "/" not in raw:
        return None
    done, total = raw.split("/", 1)
    try:
        return int(done), int(total)
    except ValueError:
        return None


def log_tail(path: Path, lines: int = 40, max_chars: int = 4000) -> str:
    """The last ``lines`` lines of a log file (at most ``max_chars``), '' when absent."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-max_chars:]


def find_adapter(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` under ``output_dir`` that is a complete adapter, or None."""
    checkpoints = []
    for child in output_dir.glob("checkpoint-*"):
        suffix = child.name.split("-", 1)[1]
        if child.is_dir() and suffix.isdigit():
            checkpoints.append((int(suffix), child))
    for _, child in sorted(checkpoints, reverse=True):
        if adapter_problem(child) is None:
            return child
    return None


def _die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the process that started it dies."""

    def arm() -> None:  # pragma: no cover - runs in the child between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return arm


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from ``/proc``; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_groups(groups: set[int], sig: int) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def start(
    command: list[str], *, cwd: Path, env: dict[str, str], sink: IO[bytes], torchrun: bool
) -> subprocess.Popen[bytes]:
    """Start the training command in a session of its own, output to ``sink``, dying with this process: by SIGKILL
    for one ``swift sft`` process, by SIGTERM for torchrun (which then stops its ranks; a SIGKILLed torchrun would
    leave them running in their own sessions)."""
    return subprocess.Popen(
        command,
        stdout=sink,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent(signal.SIGTERM if torchrun else signal.SIGKILL),  # noqa: PLW1509 - prctl only
    )


def kill_group(proc: subprocess.Popen[bytes], grace: float = KILL_GRACE) -> None:
    """SIGTERM the child's process group and the groups of all its descendants (torchrun gives each rank a
    session of its own), then SIGKILL them all after ``grace`` seconds or once the child is gone."""
    groups = {proc.pid}
    for pid in _descendants(proc.pid):  # before any signal: ranks are re-parented once torchrun exits
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    groups.discard(os.getpgrp())  # never our own
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        _signal_groups(groups, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    _signal_groups(groups, signal.SIGKILL)  # stragglers of the groups, if the leader went first


def run_sft(
    settings: Settings,
    dataset: Path,
    run_dir: Path,
    *,
    cancelled: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    timeout: float | None = None,
    poll_interval: float = 0.5,
) -> TrainingResult:
    """Train a LoRA adapter on ``dataset`` with ``swift sft``; outputs go to ``run_dir/swift``, logs to ``train.log``.

    ``cancelled`` is polled every ``poll_interval`` seconds; ``on_progress`` gets each new logged step;
    ``on_start`` gets the child's pid (= its process group id).

    Raises:
        TrainingCancelledError: ``cancelled()`` returned True; the process group was killed.
        TrainingTimeoutError: it ran longer than ``timeout`` (default ``settings.train_timeout``); killed.
        TrainingError: ``swift sft`` exited non-zero, or left no complete adapter; the message and ``log_tail``
            carry the end of its log.
        ConfigError: the settings cannot make a command (family unknown, bad extra args).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    output_dir = run_dir / "swift"
    log_path = run_dir / "train.log"
    command = sft_command(settings, dataset.resolve(), output_dir.resolve())
    limit = float(timeout if timeout is not None else settings.train_timeout)
    env = sft_env(settings)
    if settings.train_nproc == 1 and env.get("NPROC_PER_NODE", "1") != "1":
        log.warning("training: NPROC_PER_NODE=%s is not used; set LABELLOOP_TRAIN_NPROC", env["NPROC_PER_NODE"])
    log.info("training: %s", " ".join(shlex.quote(part) for part in command))
    started = time.monotonic()
    seen = 0
    with log_path.open("ab") as sink:
        proc = start(command, cwd=run_dir, env=env, sink=sink, torchrun=settings.train_nproc > 1)
        if on_start is not None:
            on_start(proc.pid)
        try:
            while True:
                try:
                    rc = proc.wait(timeout=poll_interval)
                except subprocess.TimeoutExpired:
                    rc = None
                if on_progress is not None:
                    seen = _report(output_dir / "logging.jsonl", seen, on_progress)
                if rc is not None:
                    break
                if cancelled():
                    kill_group(proc)
                    raise TrainingCancelledError("training cancelled; swift sft was stopped", log_tail(log_path))
                if time.monotonic() - started > limit:
                    kill_group(proc)
                    raise TrainingTimeoutError(
                        f"training exceeded LABELLOOP_TRAIN_TIMEOUT ({limit:.0f} s); swift sft was killed",
                        log_tail(log_path),
                    )
        except BaseException:
            if proc.poll() is None:
                kill_group(proc)
            raise
    wall = time.monotonic() - started
    tail = log_tail(log_path)
    if rc != 0:
        raise TrainingError(f"swift sft exited with code {rc} after {wall:.0f} s; end of {log_path}:\n{tail}", tail)
    adapter = find_adapter(output_dir)
    if adapter is None:
        raise TrainingError(f"swift sft exited 0 but left no complete adapter in {output_dir}", tail)
    history = read_logging(output_dir / "logging.jsonl")
    runtime = next((float(r["train_runtime"]) for r in history if "train_runtime" in r), None)
    step = max((s[0] for r in history if (s := _step(r))), default=0)
    log.info("training: done in %.1f s (%s steps), adapter %s", wall, step, adapter)
    return TrainingResult(adapter, output_dir, log_path, command, history, step, runtime, wall)


def _report(path: Path, seen: int, on_progress: Callable[[Progress], None]) -> int:
    rows = read_logging(path)
    for row in rows[seen:]:
        step = _step(row)
        if step is not None and "loss" in row:
            loss, lr = row.get("loss"), row.get("learning_rate")
            on_progress(
                Progress(
                    step[0],
                    step[1],
                    float(loss) if isinstance(loss, int | float) else None,
                    float(lr) if isinstance(lr, int | float) else None,
                )
            )
    return len(rows)
