"""Benchmark of the screenshot-marks detector on synthetic marked screenshots (bench/marks_scenes.py).

    .venv/bin/python bench/marks.py [--set tuning|holdout|both] [--marked N] [--clean N] [--seed 0] [--dump DIR]

Two sets, always reported separately: the tuning set (bench/marks_scenes.py: procedural photos, matplotlib charts,
rendered UI pages; tune on it) and the held-out set (bench/marks_holdout.py: documents, dashboards, code editors,
maps/photos, drawn independently with fixed seeds; measure on it, never tune on it). For each background type it
draws marked images and clean images, encodes them as users upload them (PNG or JPEG 75-95, some rescaled), and
reports, overall, per background type and per condition: recall and precision at IoU >= 0.5, mean IoU of matches,
kind accuracy of matches, arrow-head error, false marks on clean images, and speed on one core
(cv2.setNumThreads(1); process CPU time and wall time) with decoding timed separately. Speed is also given as ratios
measured in the same run: detection vs plain decoding of the same files, and vs a naive closed-outline baseline
detector implemented here.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import marks_holdout as holdout
import marks_scenes as scenes

from converters.marks import Mark, detect_marks
from converters.marks.model import iou

TARGETS = {"recall": 0.95, "precision": 0.95, "mean_iou": 0.85, "clean_false": 0, "ms_per_mp": 50.0}


# --------------------------------------------------------------------------------------------- baseline


def baseline_detect(rgb: np.ndarray) -> list[Mark]:
    """The naive prototype: closed outlines per colour family -> box (rectangle if it fills its box)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, sat, val = cv2.split(hsv)
    strong = (sat > 120) & (val > 120)
    out: list[Mark] = []
    for lo, hi in ((170, 10), (10, 25), (35, 85), (95, 135), (135, 170)):
        in_hue = ((hue >= lo) | (hue <= hi)) if lo > hi else ((hue >= lo) & (hue <= hi))
        mask = (strong & in_hue).astype(np.uint8) * 255
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        for i, c in enumerate(contours):
            child = hierarchy[0][i][2]
            if hierarchy[0][i][3] != -1 or child == -1:
                continue
            x, y, w, h = cv2.boundingRect(c)
            hole = cv2.contourArea(contours[child])
            if w < 12 or h < 12 or hole < 0.3 * w * h:
                continue
            fill = cv2.contourArea(c) / (w * h)
            kind = "rectangle" if fill > 0.9 else "ellipse"
            color = "#{:02x}{:02x}{:02x}".format(*tuple(int(v) for v in rgb[y, x + w // 2]))
            out.append(Mark(kind, (x, y, x + w, y + h), color, 0.5))  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------------------------- scoring


@dataclass
class Tally:
    truths: int = 0
    detections: int = 0
    matched: int = 0
    ious: list[float] = field(default_factory=list)
    kind_ok: int = 0
    head_errors: list[float] = field(default_factory=list)
    clean_images: int = 0
    clean_false: int = 0
    clean_images_with_false: int = 0
    megapixels: float = 0.0
    detect_cpu: float = 0.0
    detect_wall: float = 0.0
    decode_cpu: float = 0.0
    baseline_cpu: float = 0.0

    def add_match(self, truth: scenes.TruthMark, mark: Mark, overlap: float) -> None:
        self.matched += 1
        self.ious.append(overlap)
        self.kind_ok += truth.kind == mark.kind
        if truth.kind == "arrow" and mark.kind == "arrow" and mark.head is not None and truth.head is not None:
            self.head_errors.append(float(np.hypot(mark.head[0] - truth.head[0], mark.head[1] - truth.head[1])))

    @property
    def recall(self) -> float:
        return self.matched / self.truths if self.truths else float("nan")

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else float("nan")


def match(truths: list[scenes.TruthMark], marks: list[Mark]) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU >= 0.5 (kind-agnostic): (truth index, mark index, IoU)."""
    pairs = sorted(
        ((iou(t.bbox, m.bbox), i, j) for i, t in enumerate(truths) for j, m in enumerate(marks)), reverse=True
    )
    used_t: set[int] = set()
    used_m: set[int] = set()
    out = []
    for overlap, i, j in pairs:
        if overlap < 0.5:
            break
        if i in used_t or j in used_m:
            continue
        used_t.add(i)
        used_m.add(j)
        out.append((i, j, overlap))
    return out


def timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn(*args)
    return result, time.process_time() - c0, time.perf_counter() - w0


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import PIL

    return (
        f"{cpu}; {os.cpu_count()} logical cores; {platform.system()} {platform.release()}; "
        f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}, "
        f"pillow {PIL.__version__}"
    )


def fmt(v: float, spec: str = ".3f") -> str:
    return "  n/a" if v != v else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--set",
        dest="which",
        choices=["tuning", "holdout", "both"],
        default="both",
        help="tuning: marks_scenes.py (tune on this); holdout: marks_holdout.py (measure only)",
    )
    parser.add_argument("--marked", type=int, help="marked images per background type (default: 60 / all 60)")
    parser.add_argument("--clean", type=int, help="clean images per background type (default: 20 / all 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tuning set (the held-out seeds are fixed)")
    parser.add_argument("--dump", type=Path, help="write images with misses or false marks here, with a report")
    parser.add_argument("--cache", type=Path, help="keep generated scenes here (pickled) and reuse them on later runs")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    print(f"machine: {machine()}")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (2 shared cores)")
    print("one core: cv2.setNumThreads(1); times are process CPU time unless marked wall\n")
    detect_marks(np.zeros((64, 64, 3), np.uint8))  # warm up imports and OpenCV
    if args.which in ("tuning", "both"):
        t0 = time.perf_counter()
        marked, clean = args.marked or 60, 20 if args.clean is None else args.clean
        suite = cached(args.cache, f"tuning-{marked}-{clean}-{args.seed}", scenes.make_suite, marked, clean, args.seed)
        print(f"=== TUNING SET (bench/marks_scenes.py, seed {args.seed}): {len(suite)} scenes generated in "
              f"{time.perf_counter() - t0:.1f} s ({marked} marked + {clean} clean per background)\n")  # fmt: skip
        evaluate(suite, scenes.BACKGROUNDS, args.dump / "tuning" if args.dump else None)
    if args.which in ("holdout", "both"):
        t0 = time.perf_counter()
        marked = args.marked or len(holdout.SEEDS)
        clean = len(holdout.CLEAN_SEEDS) if args.clean is None else args.clean
        suite = cached(args.cache, f"holdout-{marked}-{clean}", holdout.make_suite, marked, clean)
        print(
            f"\n=== HELD-OUT SET (bench/marks_holdout.py, fixed seeds, never tuned on): {len(suite)} scenes "
            f"generated in {time.perf_counter() - t0:.1f} s ({marked} marked + {clean} clean per background)\n"
        )
        evaluate(suite, holdout.BACKGROUNDS, args.dump / "holdout" if args.dump else None)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def cached(directory: Path | None, key: str, make: Any, *args: Any) -> list[Any]:
    """make(*args), pickled under DIRECTORY/KEY.pkl and reused when present (scenes are deterministic per key)."""
    if directory is None:
        return list(make(*args))
    path = directory / f"{key}.pkl"
    if path.exists():
        return list(pickle.loads(path.read_bytes()))
    suite = list(make(*args))
    directory.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(suite))
    return suite


def evaluate(suite: list[Any], backgrounds: tuple[str, ...], dump: Path | None) -> None:
    """Detect on every scene of SUITE and print the tables (overall, per background, per condition)."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    base: dict[str, Tally] = defaultdict(Tally)
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_tag: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    false_kinds: dict[str, int] = defaultdict(int)
    confusion: dict[tuple[str, str], int] = defaultdict(int)
    report: list[str] = []
    for scene in suite:
        image, dec_cpu, _ = timed(lambda s: np.asarray(s.decode()), scene)
        marks, det_cpu, det_wall = timed(detect_marks, image)
        bmarks, base_cpu, _ = timed(baseline_detect, image)
        mp = scene.width * scene.height / 1e6
        for key in ("all", scene.background):
            for tally, found, cpu in ((tallies[key], marks, det_cpu), (base[key], bmarks, base_cpu)):
                tally.megapixels += mp
                tally.decode_cpu += dec_cpu
                tally.detect_cpu += cpu
                if tally is tallies[key]:
                    tally.detect_wall += det_wall
                if not scene.marks:
                    tally.clean_images += 1
                    tally.clean_false += len(found)
                    tally.clean_images_with_false += bool(found)
                    continue
                tally.truths += len(scene.marks)
                tally.detections += len(found)
                for i, j, overlap in match(scene.marks, found):
                    tally.add_match(scene.marks[i], found[j], overlap)
        pairs = match(scene.marks, marks)
        hit_t = {i for i, _, _ in pairs}
        hit_m = {j for _, j, _ in pairs}
        for i, j, _ in pairs:
            confusion[(scene.marks[i].kind, marks[j].kind)] += 1
        for i, t in enumerate(scene.marks):
            by_kind[t.kind][0] += 1
            by_kind[t.kind][1] += i in hit_t
            tags = [*t.tags, (scene.conditions["jpeg"] and "jpeg") or "png"]
            if scene.conditions.get("dark"):
                tags.append("dark-mode")
            if scene.conditions["scale"] != 1.0:
                tags.append("rescaled<0.75" if scene.conditions["scale"] < 0.75 else "rescaled")
            for tag in tags:
                key = f"stroke {tag[1:]}px" if tag.startswith("w") else tag
                by_tag[key][0] += 1
                by_tag[key][1] += i in hit_t
        for j, m in enumerate(marks):
            if j not in hit_m:
                false_kinds[f"{scene.background}/{m.kind}"] += 1
        if dump and (len(hit_t) < len(scene.marks) or len(hit_m) < len(marks)):
            dump.mkdir(parents=True, exist_ok=True)
            path = scene.write(dump)
            report.append(f"{path.name} {scene.width}x{scene.height} {scene.conditions}")
            for i, t in enumerate(scene.marks):
                flag = "ok  " if i in hit_t else "MISS"
                report.append(f"  {flag} truth {t.kind:9s} {[round(v) for v in t.bbox]} {t.color} {t.tags}")
            for j, m in enumerate(marks):
                flag = "ok  " if j in hit_m else "FALSE"
                report.append(f"  {flag} found {m.kind:9s} {list(m.bbox)} {m.color} {m.score:.2f}")
    if dump:
        (dump / "report.txt").write_text("\n".join(report) + "\n")

    keys = ["all", *backgrounds]
    print("detector (IoU >= 0.5, kind-agnostic matching; kind accuracy is over matches)")
    header = (f"{'':10s}{'truths':>7s}{'recall':>8s}{'precision':>10s}{'meanIoU':>8s}{'kind':>7s}"
              f"{'head px':>9s}{'clean FP':>9s}{'ms/MP':>7s}{'wall':>7s}{'decode':>7s}{'x dec':>7s}")  # fmt: skip
    print(header)
    for key in keys:
        t = tallies[key]
        det = 1000 * t.detect_cpu / t.megapixels
        dec = 1000 * t.decode_cpu / t.megapixels
        head = statistics.median(t.head_errors) if t.head_errors else float("nan")
        print(f"{key:10s}{t.truths:7d}{fmt(t.recall):>8s}{fmt(t.precision):>10s}"
              f"{fmt(statistics.fmean(t.ious) if t.ious else float('nan')):>8s}"
              f"{fmt(t.kind_ok / t.matched if t.matched else float('nan')):>7s}{fmt(head, '.1f'):>9s}"
              f"{t.clean_false:>5d}/{t.clean_images:<3d}{det:7.1f}{1000 * t.detect_wall / t.megapixels:7.1f}"
              f"{dec:7.1f}{det / dec:7.2f}")  # fmt: skip
    print("\nbaseline: naive closed-outline detector (the prototype's approach), same images, same run")
    print(f"{'':10s}{'recall':>8s}{'precision':>10s}{'meanIoU':>8s}{'kind':>7s}{'clean FP':>9s}{'ms/MP':>7s}")
    for key in keys:
        b = base[key]
        print(f"{key:10s}{fmt(b.recall):>8s}{fmt(b.precision):>10s}"
              f"{fmt(statistics.fmean(b.ious) if b.ious else float('nan')):>8s}"
              f"{fmt(b.kind_ok / b.matched if b.matched else float('nan')):>7s}"
              f"{b.clean_false:>5d}/{b.clean_images:<3d}{1000 * b.detect_cpu / b.megapixels:7.1f}")  # fmt: skip
    t = tallies["all"]
    b = base["all"]
    print(f"\nspeed ratios (same run): detection / decode = {t.detect_cpu / t.decode_cpu:.2f}; "
          f"detection / baseline = {t.detect_cpu / b.detect_cpu:.2f}; "
          f"wall / CPU = {t.detect_wall / t.detect_cpu:.2f}")  # fmt: skip
    print(
        "\nrecall by kind: " + ", ".join(f"{k} {v[1]}/{v[0]} ({v[1] / v[0]:.2f})" for k, v in sorted(by_kind.items()))
    )
    print("recall by condition:")
    for tag, (n, hit) in sorted(by_tag.items()):
        print(f"  {tag:22s}{hit:5d}/{n:<5d}{hit / n:6.2f}")
    print("kind confusion (truth -> found): " + ", ".join(
        f"{a}->{b_} {n}" for (a, b_), n in sorted(confusion.items()) if a != b_) or "none")  # fmt: skip
    print(
        "false marks by background/kind: " + (", ".join(f"{k} {v}" for k, v in sorted(false_kinds.items())) or "none")
    )
    head = statistics.median(t.head_errors) if t.head_errors else float("nan")
    p90 = float(np.percentile(t.head_errors, 90)) if t.head_errors else float("nan")
    print(f"arrow-head error: median {head:.1f} px, 90th percentile {p90:.1f} px over {len(t.head_errors)} arrows")
    ms = 1000 * t.detect_cpu / t.megapixels
    checks = [
        ("recall", t.recall, t.recall >= TARGETS["recall"], ">= 0.95"),
        ("precision", t.precision, t.precision >= TARGETS["precision"], ">= 0.95"),
        ("mean IoU", statistics.fmean(t.ious), statistics.fmean(t.ious) >= TARGETS["mean_iou"], ">= 0.85"),
        ("false marks on clean images", t.clean_false, t.clean_false == 0, "== 0"),
        ("ms per MP (CPU, one core)", ms, ms <= TARGETS["ms_per_mp"], "<= 50"),
    ]
    print("\ntargets:")
    for name, value, ok, target in checks:
        print(f"  {'met ' if ok else 'MISSED'} {name:30s} {value:8.3f}  (target {target})")


if __name__ == "__main__":
    main()
