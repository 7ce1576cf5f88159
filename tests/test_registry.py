"""The registry: runs and versions in SQLite, an active pointer that only names complete adapters, rollback, prune."""

from __future__ import annotations

import json
import multiprocessing
import struct
from pathlib import Path

import pytest

from ml_backend.registry import (
    NotFoundError,
    Registry,
    RegistryError,
    RunStatus,
    VersionStatus,
    adapter_problem,
)


def fake_adapter(path: Path, payload: bytes = b"\x00" * 16) -> Path:
    """A syntactically complete peft adapter directory (one float32 tensor of 4 values)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [len(payload) // 4], "data_offsets": [0, len(payload)]}})
    blob = header.encode()
    (path / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + payload)
    return path


def trained_version(registry: Registry, tmp_path: Path, project: int = 1, name: str = "ckpt") -> str:
    run = registry.create_run(project, trigger="threshold", base_model="tiny")
    vid = registry.new_version_id(project)
    stored = registry.store_adapter(fake_adapter(tmp_path / f"{name}-{run.id}"), vid)
    return registry.add_version(run.id, stored, version_id=vid, dataset_hash="abc", dataset_size=10).id


def test_a_new_project_serves_the_base_model(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    assert registry.active(1) is None
    assert registry.active_map() == {}
    assert (tmp_path / "registry.sqlite3").exists()


def test_runs_get_per_project_ids_and_record_their_parent(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    first = registry.create_run(7, trigger="threshold", base_model="tiny", reviews=50)
    assert (first.id, first.status, first.parent_version, first.reviews) == ("p7-r1", RunStatus.QUEUED, None, 50)
    assert registry.create_run(7, trigger="manual", base_model="tiny").id == "p7-r2"
    assert registry.create_run(8, trigger="manual", base_model="tiny").id == "p8-r1"
    assert [r.id for r in registry.list_runs(7)] == ["p7-r2", "p7-r1"]
    assert first.run_dir == str(tmp_path.resolve() / "runs" / "p7-r1")


def test_update_run_refuses_a_transition_from_an_unexpected_status(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    run = registry.create_run(1, trigger="threshold", base_model="tiny")
    registry.update_run(run.id, status=RunStatus.CANCELLED)
    with pytest.raises(RegistryError, match=r"run p1-r1: is cancelled, expected one of exporting, queued"):
        registry.update_run(run.id, expect={RunStatus.QUEUED, RunStatus.EXPORTING}, status=RunStatus.TRAINING)
    assert registry.get_run(run.id).finished_at is not None
    with pytest.raises(NotFoundError, match="run 'p9-r9': no such run"):
        registry.get_run("p9-r9")


def test_promote_flips_the_pointer_and_marks_version_and_run(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    vid = trained_version(registry, tmp_path)
    assert registry.get_version(vid).status is VersionStatus.CANDIDATE
    assert registry.active(1) is None
    promoted = registry.promote(vid, metrics={"score": 0.9})
    assert promoted.status is VersionStatus.PROMOTED and promoted.metrics == {"score": 0.9}
    assert registry.active(1) == promoted
    assert registry.active_map() == {1: promoted}
    assert registry.get_run(promoted.run_id or "").status is RunStatus.PROMOTED
    assert Path(promoted.adapter_path) == (tmp_path / "adapters" / vid).resolve()


def test_the_pointer_never_names_an_incomplete_adapter(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    vid = trained_version(registry, tmp_path)
    weights = Path(registry.get_version(vid).adapter_path) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])  # a truncated copy
    with pytest.raises(RegistryError, match="truncated"):
        registry.promote(vid)
    assert registry.active(1) is None


def test_store_adapter_refuses_a_partial_checkpoint_and_leaves_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "data")
    partial = tmp_path / "checkpoint-3"
    partial.mkdir()
    (partial / "adapter_config.json").write_text("{}")
    with pytest.raises(RegistryError, match=r"adapter_model\.safetensors is missing"):
        registry.store_adapter(partial, "p1-v1")
    assert not (registry.adapters_dir / "p1-v1").exists()
    assert list(registry.adapters_dir.glob(".*")) == []


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda p: (p / "adapter_config.json").unlink(), "adapter_config.json is missing"),
        (lambda p: (p / "adapter_config.json").write_text("{"), "adapter_config.json is unreadable"),
        (lambda p: (p / "adapter_model.safetensors").write_bytes(b"junk"), "not a safetensors file"),
        (lambda p: (p / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 999) + b"{}"), "truncated"),
    ],
)
def test_adapter_problem_names_what_is_wrong(tmp_path: Path, mutate, problem: str) -> None:
    path = fake_adapter(tmp_path / "a")
    assert adapter_problem(path) is None
    mutate(path)
    assert problem in (adapter_problem(path) or "")


def test_reject_keeps_the_active_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    good = trained_version(registry, tmp_path, name="good")
    registry.promote(good)
    bad = trained_version(registry, tmp_path, name="bad")
    assert registry.get_version(bad).parent == good
    registry.reject(bad, reason="score 0.25 < current 0.97 - margin 0.00", metrics={"score": 0.25})
    assert registry.active(1).id == good  # type: ignore[union-attr]
    run = registry.get_run(registry.get_version(bad).run_id or "")
    assert run.status is RunStatus.REJECTED and run.error and "0.25" in run.error
    with pytest.raises(RegistryError, match="rejected by the gate"):
        registry.promote(bad)


def test_rollback_goes_to_the_parent_or_a_named_version_or_the_base(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    v1 = trained_version(registry, tmp_path, name="a")
    registry.promote(v1)
    v2 = trained_version(registry, tmp_path, name="b")
    registry.promote(v2)
    assert registry.rollback(1) == registry.get_version(v1)
    assert registry.active(1).id == v1  # type: ignore[union-attr]
    assert registry.rollback(1, v2).id == v2  # type: ignore[union-attr]
    assert registry.rollback(1, "base") is None
    assert registry.active(1) is None
    with pytest.raises(RegistryError, match="serves the base model; nothing to roll back"):
        registry.rollback(1)
    reasons = [(a.version_id, a.previous, a.reason) for a in registry.activations(1)]
    assert reasons[0] == (None, v2, "rollback")
    assert reasons[-1] == (v1, None, "promoted")


def test_rollback_refuses_other_projects_candidates_and_unknown_versions(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    other = trained_version(registry, tmp_path, project=2, name="other")
    registry.promote(other)
    candidate = trained_version(registry, tmp_path, project=1, name="cand")
    with pytest.raises(RegistryError, match=f"version {other}: belongs to project 2, not 1"):
        registry.rollback(1, other)
    with pytest.raises(RegistryError, match=f"version {candidate}: is candidate; only promoted versions"):
        registry.rollback(1, candidate)
    with pytest.raises(NotFoundError, match="no such version"):
        registry.rollback(1, "p1-v99")


def test_prune_keeps_the_newest_and_never_the_active_or_its_parent(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    ids = []
    for i in range(5):
        ids.append(trained_version(registry, tmp_path, name=f"v{i}"))
        registry.promote(ids[-1])
    registry.rollback(1, ids[1])  # active is v2 (index 1), its parent v1 (index 0)
    pruned = registry.prune(1, keep=2)
    assert [v.id for v in pruned] == [ids[2]]
    on_disk = {v.id for v in registry.list_versions(1) if v.is_on_disk}
    assert on_disk == {ids[0], ids[1], ids[3], ids[4]}
    assert not Path(registry.get_version(ids[2]).adapter_path).exists()
    with pytest.raises(RegistryError, match="adapter not on disk"):
        registry.rollback(1, ids[2])


def _promote_in_child(data_dir: str, vid: str) -> None:
    Registry(Path(data_dir)).promote(vid)


def test_another_process_sees_a_promotion(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    vid = trained_version(registry, tmp_path)
    child = multiprocessing.get_context("spawn").Process(target=_promote_in_child, args=(str(tmp_path), vid))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert registry.active(1).id == vid  # type: ignore[union-attr]
