"""training.py: the `swift sft` subprocess — arguments from Settings, real runs on the tiny model, cancel, failure,
timeout, death with its parent, and the learnability of the colour task through the adapter path."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from loop_fixtures import QUICK_TRAINING, colour_images, swift_rows, write_jsonl

from ml_backend.exceptions import ConfigError
from ml_backend.registry import adapter_problem
from ml_backend.settings import Settings
from ml_backend.training import (
    TrainingCancelledError,
    TrainingError,
    TrainingTimeoutError,
    find_adapter,
    kill_group,
    loss_curve,
    resolve_family,
    run_sft,
    sft_command,
    sft_env,
    start,
)


def _value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): check its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", swift_rows(colour_images(tmp_path / "img", 8)))


def test_the_command_comes_from_settings(make_settings: Callable[..., Settings], tiny_model, tmp_path: Path) -> None:
    settings = make_settings(
        model=str(tiny_model("qwen2_vl")),
        lora_rank=64,
        lora_alpha=128,
        learning_rate=3e-3,
        epochs=2,
        train_batch_size=8,
        grad_accum=2,
        freeze_vit=False,
        modules_to_save="lm_head,embed_tokens",
        swift_extra_args="--warmup_ratio 0.1 --max_length '1024'",
        device="cpu",
    )
    command = sft_command(settings, tmp_path / "train.jsonl", tmp_path / "out", python="py")
    assert command[:3] == ["py", "-m", "swift.cli.sft"]  # not the `swift` wrapper, which orphans its child
    expected = {
        "--model_type": "qwen2_vl", "--template": "qwen2_vl", "--tuner_type": "lora", "--lora_rank": "64",
        "--lora_alpha": "128", "--learning_rate": "0.003", "--num_train_epochs": "2.0", "--max_steps": "-1",
        "--per_device_train_batch_size": "8", "--gradient_accumulation_steps": "2", "--freeze_vit": "false",
        "--torch_dtype": "float32", "--fp16": "false", "--bf16": "false", "--check_model": "false",
        "--dataloader_num_workers": "0", "--report_to": "none", "--add_version": "false", "--warmup_ratio": "0.1",
        "--max_length": "1024", "--dataset": str(tmp_path / "train.jsonl"), "--output_dir": str(tmp_path / "out"),
    }  # fmt: skip
    assert {flag: _value(command, flag) for flag in expected} == expected
    at = command.index("--modules_to_save")
    assert command[at + 1 : at + 3] == ["lm_head", "embed_tokens"]


def test_several_gpus_train_under_torchrun_with_the_same_swift_arguments(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from torch.distributed.run import get_args_parser

    one = sft_command(make_settings(model_family="qwen2_vl"), tmp_path / "t.jsonl", tmp_path / "out", python="py")
    four = sft_command(make_settings(model_family="qwen2_vl", train_nproc=4), tmp_path / "t.jsonl", tmp_path / "out",
                       python="py")  # fmt: skip
    assert one[:3] == ["py", "-m", "swift.cli.sft"]
    assert four[:3] == ["py", "-m", "torch.distributed.run"]
    # torchrun's own parser reads the launcher's arguments as meant, and hands swift sft the same arguments
    args = get_args_parser().parse_args(four[3:])
    assert (args.standalone, args.nproc_per_node, args.module, args.training_script) == (True, "4", True,
                                                                                         "swift.cli.sft")  # fmt: skip
    assert args.training_script_args == one[3:]
    assert sft_env(make_settings(train_nproc=4), {})["QWENVL_BBOX_FORMAT"] == "legacy"


RANK = """import os, pathlib, signal, sys, time
if sys.argv[2] == "deaf":  # like a rank stuck in a collective or a kernel: SIGTERM does nothing
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1], "rank" + os.environ["RANK"]).write_text(str(os.getpid()))
time.sleep(600)
"""


def _torchrun_ranks(
    tmp_path: Path, parent_script: str | None = None, *, deaf: bool = False
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """torchrun with two sleeping ranks, started by :func:`ml_backend.training.start` (here, or in a child
    ``python -c parent_script``); returns the process that was started and the ranks' pids once both run."""
    (tmp_path / "rank.py").write_text(RANK)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "rank.py"), str(tmp_path), "deaf" if deaf else "normal"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if parent_script is None:
        with (tmp_path / "log").open("ab") as sink:
            proc = start(command, cwd=tmp_path, env=env, sink=sink, torchrun=True)
    else:
        proc = subprocess.Popen([sys.executable, "-c", parent_script, json.dumps(command), str(tmp_path)], env=env)
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"rank{rank}").exists() and (tmp_path / f"rank{rank}").read_text() for rank in (0, 1)):
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()[-2000:]
        time.sleep(0.1)
    return proc, [int((tmp_path / f"rank{rank}").read_text()) for rank in (0, 1)]


def _wait_dead(pids: list[int], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while any(_pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_pid_alive(pid) for pid in pids)


@pytest.mark.swift
def test_cancel_kills_torchrun_and_its_ranks_in_their_own_sessions(tmp_path: Path) -> None:
    proc, ranks = _torchrun_ranks(tmp_path, deaf=True)
    try:
        assert all(os.getpgid(rank) not in (proc.pid, os.getpgrp()) for rank in ranks)  # why the group is not enough
        kill_group(proc, grace=5)
        _wait_dead([proc.pid, *ranks])
        assert all(_group_members(rank) == [] for rank in ranks)
    finally:
        for pid in (proc.pid, *ranks):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.mark.swift
def test_a_killed_worker_takes_torchrun_and_its_ranks_with_it(tmp_path: Path) -> None:
    parent = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        from ml_backend.training import start
        with (Path(sys.argv[2]) / "log").open("ab") as sink:
            proc = start(json.loads(sys.argv[1]), cwd=Path(sys.argv[2]), env=None, sink=sink, torchrun=True)
        (Path(sys.argv[2]) / "torchrun").write_text(str(proc.pid))
        time.sleep(600)
        """
    )
    worker, ranks = _torchrun_ranks(tmp_path, parent)
    torchrun = int((tmp_path / "torchrun").read_text())
    try:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        _wait_dead([torchrun, *ranks])  # torchrun got SIGTERM from the kernel and stopped its ranks
    finally:
        for pid in (torchrun, *ranks):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_the_family_must_be_known(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match=r"LABELLOOP_MODEL_FAMILY: .* says model_type 'llama'"):
        resolve_family(make_settings(model=str(tmp_path / "m")))
    with pytest.raises(ConfigError, match=r"LABELLOOP_MODEL_FAMILY: not set and .* is unreadable"):
        resolve_family(make_settings(model="Qwen/Qwen2-VL-2B-Instruct"))
    assert resolve_family(make_settings(model="Qwen/Qwen2-VL-2B-Instruct", model_family="qwen2_vl")) == "qwen2_vl"
    with pytest.raises(ConfigError, match="LABELLOOP_SWIFT_EXTRA_ARGS: not valid shell words"):
        sft_command(make_settings(model_family="qwen2_vl", swift_extra_args="--x 'open"), tmp_path, tmp_path)


def test_the_child_environment_is_offline_and_secret_free(make_settings: Callable[..., Settings]) -> None:
    env = sft_env(make_settings(max_pixels=50176), {"PATH": "/bin", "LABELLOOP_LS_API_KEY": "secret"})
    assert env["MAX_PIXELS"] == "50176"
    assert env["HF_HUB_OFFLINE"] == env["MODELSCOPE_OFFLINE"] == "1"
    assert "LABELLOOP_LS_API_KEY" not in env
    assert env["PATH"] == "/bin"


@pytest.mark.swift
def test_a_short_run_leaves_a_complete_adapter_and_its_loss_curve(
    make_settings: Callable[..., Settings], tiny_model, dataset: Path, tmp_path: Path
) -> None:
    settings = make_settings(model=str(tiny_model("qwen2_vl")), **QUICK_TRAINING)
    steps: list[int] = []
    result = run_sft(settings, dataset, tmp_path / "run", on_progress=lambda p: steps.append(p.step))
    assert adapter_problem(result.adapter_dir) is None
    assert result.adapter_dir == tmp_path / "run" / "swift" / "checkpoint-3"
    assert result.global_step == 3
    assert [step for step, _ in loss_curve(result.history)] == [1, 2, 3]
    assert steps == [1, 2, 3]
    assert "swift.cli.sft" in (tmp_path / "run" / "train.log").read_text() or result.log_path.stat().st_size > 0


@pytest.mark.swift
def test_a_failing_sft_raises_with_the_tail_of_its_log(
    make_settings: Callable[..., Settings], tiny_model, dataset: Path, tmp_path: Path
) -> None:
    settings = make_settings(model=str(tiny_model("qwen2_vl")), swift_extra_args="--no_such_flag 1", **QUICK_TRAINING)
    with pytest.raises(TrainingError) as info:
        run_sft(settings, dataset, tmp_path / "run")
    assert "swift sft exited with code" in str(info.value)
    assert "no_such_flag" in info.value.log_tail
    assert find_adapter(tmp_path / "run" / "swift") is None


@pytest.mark.swift
def test_cancel_and_timeout_kill_the_whole_process_group(
    make_settings: Callable[..., Settings], tiny_model, dataset: Path, tmp_path: Path
) -> None:
    settings = make_settings(model=str(tiny_model("qwen2_vl")), **{**QUICK_TRAINING, "max_steps": 100000})
    pids: list[int] = []
    with pytest.raises(TrainingCancelledError):
        run_sft(settings, dataset, tmp_path / "a", on_start=pids.append, cancelled=lambda: bool(pids))
    with pytest.raises(TrainingTimeoutError, match="LABELLOOP_TRAIN_TIMEOUT"):
        run_sft(settings, dataset, tmp_path / "b", on_start=pids.append, timeout=1)
    for pid in pids:
        assert not _pid_alive(pid)
        assert _group_members(pid) == []
    assert find_adapter(tmp_path / "a" / "swift") is None


@pytest.mark.swift
def test_training_dies_with_the_process_that_started_it(
    make_settings: Callable[..., Settings], tiny_model, dataset: Path, tmp_path: Path
) -> None:
    """A worker killed with SIGKILL must not leave `swift sft` running (it is in its own session)."""
    settings = make_settings(model=str(tiny_model("qwen2_vl")), **{**QUICK_TRAINING, "max_steps": 100000})
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from ml_backend.settings import Settings
        from ml_backend.training import run_sft
        settings = Settings.model_validate_json(Path(sys.argv[1]).read_text())
        run_sft(settings, Path(sys.argv[2]), Path(sys.argv[3]),
                on_start=lambda pid: Path(sys.argv[4]).write_text(str(pid)))
        """
    )
    (tmp_path / "settings.json").write_text(settings.model_dump_json())
    pid_file = tmp_path / "swift.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "settings.json"), str(dataset), str(tmp_path / "run"),
         str(pid_file)],
    )  # fmt: skip
    try:
        while not pid_file.exists() or not pid_file.read_text():
            assert parent.poll() is None, "the parent died before starting swift"
            time.sleep(0.1)
        child = int(pid_file.read_text())
        while not (tmp_path / "run" / "swift" / "logging.jsonl").exists():  # mid-training
            assert _pid_alive(child), (tmp_path / "run" / "train.log").read_text()[-2000:]
            time.sleep(0.2)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        time_limit = time.monotonic() + 60
        while _pid_alive(child) and time.monotonic() < time_limit:
            time.sleep(0.1)
        assert not _pid_alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
    deadline = time.monotonic() + 60
    while _group_members(child) and time.monotonic() < deadline:  # forked helpers (datasets' pool) go too
        time.sleep(0.1)
    assert _group_members(child) == []
