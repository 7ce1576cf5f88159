"""The training report of a run: ``<run dir>/report.html``, one self-contained file.

Sections: the run (status, trigger, timings, the gate's reason or the error and the end of the log), the loss
curve from ms-swift's ``logging.jsonl`` (a PNG drawn with matplotlib's Agg backend, inlined as base64), the
evaluation table (candidate versus current, per control), and the dataset summary from the exporter's
``report.json``. Written by the training job at the end of every run, whatever the outcome; missing pieces
(no training happened, no evaluation) are said so rather than left out. ``labelloop runs show`` prints its path.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

from ml_backend.registry import Registry, TrainingRun

log = logging.getLogger(__name__)

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.promoted{color:#1a7f37}.rejected,.failed,.cancelled{color:#b42318}pre{background:#f6f6f6;padding:.6em;overflow:auto}
"""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def loss_plot_png(points: list[tuple[int, float]]) -> bytes | None:
    """The loss curve as PNG bytes (None without points). Uses matplotlib's Agg backend, no display."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.2), dpi=100)
    axes = figure.add_subplot()
    axes.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 60 else None)
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _eval_table(metrics: dict[str, Any]) -> str:
    candidate, current = metrics.get("candidate"), metrics.get("current")
    if not isinstance(candidate, dict) or not isinstance(current, dict):
        return "<p>No evaluation (the run stopped before it).</p>"
    rows = []
    by_name = {c["control"]: c for c in current.get("controls", [])}
    for control in candidate.get("controls", []):
        other = by_name.get(control["control"], {})
        extras = sorted(k for k in control if k not in {"control", "kind", "metric", "value", "tasks"})
        detail = ", ".join(f"{k} {control[k]:.3f} vs {other.get(k, float('nan')):.3f}" for k in extras)
        rows.append(
            f"<tr><td>{html.escape(control['control'])}</td><td>{html.escape(control['kind'])}</td>"
            f"<td>{html.escape(control['metric'])}</td><td class=num>{control['value']:.3f}</td>"
            f"<td class=num>{other.get('value', float('nan')):.3f}</td><td>{html.escape(detail)}</td></tr>"
        )
    gate = metrics.get("gate") or {}
    return (
        f"<p>Held-out tasks: {candidate.get('tasks', 0)} (failed predictions: candidate "
        f"{candidate.get('failed', 0)}, current {current.get('failed', 0)}).</p>"
        "<table><tr><th>control</th><th>kind</th><th>metric</th>"
        f"<th>candidate {html.escape(str(candidate.get('model')))}</th>"
        f"<th>current {html.escape(str(current.get('model')))}</th><th>also</th></tr>"
        + "".join(rows)
        + "<tr><th colspan=3>score</th>"
        f"<th class=num>{candidate.get('score', 0):.3f}</th><th class=num>{current.get('score', 0):.3f}</th>"
        f"<th>{html.escape(str(gate.get('reason', '')))}</th></tr></table>"
    )


def _dataset(export: dict[str, Any] | None, run: TrainingRun) -> str:
    if not isinstance(export, dict):
        return "<p>No export (the run stopped before it).</p>"
    rows = export.get("rows") or {}
    parts = [
        ("tasks read", export.get("tasks_in")),
        ("tasks written", export.get("tasks_written")),
        ("tasks dropped", export.get("tasks_dropped")),
        ("train rows", rows.get("train")),
        ("val rows", rows.get("val")),
        ("images written", export.get("images_written")),
        ("dataset sha256", run.dataset_hash),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in parts)
    dropped = export.get("dropped_by_reason") or {}
    labels = export.get("labels") or {}
    extra = ""
    if dropped:
        extra += "<p>Dropped: " + html.escape(", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))) + "</p>"
    for control, counts in sorted(labels.items()):
        extra += (
            f"<p>{html.escape(control)}: "
            + html.escape(", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
            + "</p>"
        )
    return f"<table>{table}</table>{extra}"


def render_report(run: TrainingRun, history: list[dict[str, Any]], metrics: dict[str, Any], export: Any) -> str:
    """The report's HTML for ``run`` (see the module docstring)."""
    from ml_backend.training import loss_curve

    status = run.status.value
    facts = [
        ("project", run.project), ("trigger", run.trigger), ("status", status), ("version", run.version_id or "-"),
        ("parent", run.parent_version or "base"), ("base model", run.base_model), ("attempts", run.attempts),
        ("created", _when(run.created_at)), ("started", _when(run.started_at)), ("finished", _when(run.finished_at)),
    ]  # fmt: skip
    head = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    note = ""
    if run.error:
        note += f"<p class={status}><b>{html.escape(run.error)}</b></p>"
    if run.log_tail and status in {"failed", "cancelled"}:
        note += f"<h2>End of the training log</h2><pre>{html.escape(run.log_tail)}</pre>"
    points = loss_curve(history)
    png = loss_plot_png(points)
    if png:
        first, last = points[0], points[-1]
        curve = (
            f'<img alt="loss curve" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f"<p>loss {first[1]:.4f} at step {first[0]} -> {last[1]:.4f} at step {last[0]}</p>"
        )
    else:
        curve = "<p>No loss was logged (training did not run or logged nothing).</p>"
    timings = metrics.get("timings") or {}
    if timings:
        curve += "<p>Stages: " + html.escape(", ".join(f"{k} {v:.1f} s" for k, v in timings.items())) + "</p>"
    train = metrics.get("train") or {}
    if train:
        curve += (
            f"<p>{train.get('global_step')} steps, train runtime {train.get('train_runtime')} s, "
            f"wall {train.get('wall_seconds')} s</p>"
        )
    args = html.escape(json.dumps(run.args, indent=2, sort_keys=True))
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>labelloop run {html.escape(run.id)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>Run {html.escape(run.id)} "
        f"<span class={status}>{status}</span></h1><table>{head}</table>{note}"
        f"<h2>Loss</h2>{curve}<h2>Evaluation: candidate vs current</h2>{_eval_table(metrics)}"
        f"<h2>Dataset</h2>{_dataset(export, run)}<h2>Arguments</h2><pre>{args}</pre></body></html>"
    )


def write_report(registry: Registry, run: TrainingRun) -> Path:
    """Write ``report.html`` into the run directory (atomically) and return its path.

    Raises:
        OSError: the file cannot be written.
    """
    from ml_backend.training import read_logging

    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = run.metrics or _read_json(run_dir / "eval.json") or {}
    history = read_logging(run_dir / "swift" / "logging.jsonl")
    export = _read_json(run_dir / "export" / "report.json")
    text = render_report(run, history, metrics, export)
    tmp = run_dir / ".report.html.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(run.report_path)
    return run.report_path
