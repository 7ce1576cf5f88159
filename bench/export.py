"""Benchmark of the exporter against a one-process Pillow floor, measured in the same run.

Default (``make bench``): 2,000 synthetic tasks, each with its own image (long side 400..4000 px; 70 % photo-like
JPEGs, 30 % PNG screenshots), labelled like the sample project (caption, boxes, a choice, a review verdict,
some questions). It prints:

- the machine (CPU model, cores, Python and library versions);
- the floor: Pillow open + decode + RGB + resize to 1024 + save in the exporter's output format, one process,
  over the same image files (read into the page cache first, for both);
- the exporter (all cleaning on, every core, in a fresh process): wall time, CPU time, tasks/s, the ratio to the
  floor, peak RSS of the process tree (sampled every 20 ms) - target: wall ratio <= 0.8;
- the load average before and after, and the CPU-time ratio: on a shared machine other processes take cores
  from the two-process exporter more than from the one-process floor, so the wall ratio alone can mislead.
  ``--repeat N`` alternates floor and exporter N times and keeps the best of each.

``--rss-check`` runs the exporter at 2,000 and at 20,000 tasks, every task with its own image (small images,
long side <= 640 px, so that generating 20,000 of them stays cheap and any per-task memory growth would show
against the small decoding buffers) and prints the ratio of the peak RSS - target <= 1.2.

Generated images are cached under ``$LABELLOOP_CACHE/bench-export`` (keyed by the parameters).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from converters.boxes import Box  # noqa: E402
from converters.samples import SAMPLE_LABEL_CONFIG, LabelStudioExport, draw_screenshot  # noqa: E402

CACHE = Path(os.environ.get("LABELLOOP_CACHE", Path.home() / ".cache" / "labelloop")) / "bench-export"
GENERATOR_VERSION = 1
MAX_SIDE = 1024


# --- synthetic data --------------------------------------------------------------------------------------


def _photo(width: int, height: int, rng: np.random.Generator, noise: np.ndarray) -> tuple[Image.Image, list[Box]]:
    """A photo-like image: smooth colour field, large blobs, a few shapes, sensor-like noise."""
    small = rng.uniform(30, 230, (4, 4, 3)).astype(np.uint8)
    image = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.uniform(-0.2, 0.8) * width, rng.uniform(-0.2, 0.8) * height
        x1, y1 = x0 + rng.uniform(0.2, 0.6) * width, y0 + rng.uniform(0.2, 0.6) * height
        draw.ellipse([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(30, 230, 3)))
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        size = int(rng.uniform(0.1, 0.25) * min(width, height))
        x0, y0 = int(rng.uniform(0, width - size)), int(rng.uniform(0, height - size))
        draw.rectangle([x0, y0, x0 + size, y0 + size], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        boxes.append(Box(x0, y0, x0 + size, y0 + size))
    pixels = np.asarray(image, dtype=np.int16)
    tiled = np.tile(noise, (height // noise.shape[0] + 1, width // noise.shape[1] + 1))[:height, :width]
    pixels = np.clip(pixels + tiled[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB"), boxes


def _make_image(args: tuple[int, int, int, Path]) -> dict[str, Any]:
    index, seed, max_px, folder = args
    rng = np.random.default_rng([seed, index])
    noise = np.random.default_rng(seed).normal(0, 5, (509, 503)).astype(np.int16)
    longer = int(rng.integers(min(400, max_px), max_px + 1))
    shorter = int(longer * rng.uniform(0.55, 1.0))
    landscape = bool(rng.integers(2))
    width, height = (longer, shorter) if landscape else (shorter, longer)
    if rng.uniform() < 0.3:
        image, marks, _, what = draw_screenshot(width, height, rng)
        name = f"img-{index:06d}.png"
        image.save(folder / name, "PNG")
        return {"name": name, "width": width, "height": height, "boxes": [b.rounded() for b in marks],
                "label": "marks", "caption": f"The red rectangle marks {what}.", "scene": "screenshot"}  # fmt: skip
    image, boxes = _photo(width, height, rng, noise)
    name = f"img-{index:06d}.jpg"
    image.save(folder / name, "JPEG", quality=int(rng.integers(85, 96)))
    return {"name": name, "width": width, "height": height, "boxes": [b.rounded() for b in boxes],
            "label": "square", "caption": f"{len(boxes)} squares on a colourful photo.", "scene": "shapes"}  # fmt: skip


def generate(tasks: int, max_px: int, seed: int) -> Path:
    """A cached synthetic project: ``media/upload/1/img-*.{jpg,png}``, ``export.json``, ``label_config.xml``."""
    root = CACHE / f"v{GENERATOR_VERSION}-n{tasks}-px{max_px}-s{seed}"
    if (root / "done").exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    folder = root / "media" / "upload" / "1"
    folder.mkdir(parents=True)
    started = time.perf_counter()
    print(f"generating {tasks} images (long side <= {max_px} px) into {root} ...", flush=True)
    with multiprocessing.get_context("forkserver").Pool() as pool:
        images = pool.map(_make_image, [(i, seed, max_px, folder) for i in range(tasks)], chunksize=8)
    ls = LabelStudioExport()
    exported = []
    for index, image in enumerate(images):
        w, h = image["width"], image["height"]
        result = [ls.textarea("caption" if image["scene"] == "shapes" else "description", image["caption"])]
        for box in image["boxes"]:
            result.append(ls.rectangle("objects", Box(*box), w, h, [image["label"]]))
        result += [ls.choice("scene", image["scene"]), ls.choice("review", "accept")]
        data: dict[str, Any] = {"image": f"/data/upload/1/{image['name']}"}
        if index % 5 == 0:
            data["question"] = "How many squares are there?"
            result.append(ls.textarea("answer", str(len(image["boxes"]))))
        exported.append(ls.task(data, [ls.annotation(result)]))
    with (root / "export.json").open("w") as handle:
        json.dump(exported, handle)
    (root / "label_config.xml").write_text(SAMPLE_LABEL_CONFIG)
    (root / "done").write_text("ok\n")
    print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)
    return root


# --- measurements ----------------------------------------------------------------------------------------


def warm(folder: Path) -> int:
    """Read every image once so the floor and the exporter both start from the page cache; returns bytes."""
    total = 0
    for path in sorted(folder.iterdir()):
        total += len(path.read_bytes())
    return total


def floor(folder: Path, names: list[str], out: Path) -> tuple[float, float]:
    """One process: Pillow open + decode + RGB + resize (longer side 1024, LANCZOS) + save, per image.

    Returns (wall seconds, CPU seconds).
    """
    out.mkdir(parents=True, exist_ok=True)
    started, cpu = time.perf_counter(), time.process_time()
    for name in names:
        with Image.open(folder / name) as source:
            png = source.format == "PNG"
            image = source.convert("RGB")
        scale = MAX_SIDE / max(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        if png:
            image.save(buffer, "PNG", compress_level=1)
        else:
            image.save(buffer, "JPEG", quality=90)
        (out / name).write_bytes(buffer.getvalue())
    return time.perf_counter() - started, time.process_time() - cpu


_CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from converters.export import ExportOptions, export_tasks
from converters.label_config import parse_label_config
from converters.media import MediaConfig
from converters.tasks import ExportFile
root = Path({root!r})
config = parse_label_config((root / "label_config.xml").read_text())
options = ExportOptions(workers={workers}, overwrite=True)
media = MediaConfig(media_dir=root / "media")
started = time.perf_counter()
report = export_tasks(ExportFile(Path({export!r})), config, Path({out!r}), options=options, media=media)
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "in": report.tasks_in, "written": report.tasks_written,
                  "dropped": report.dropped_by_reason, "rows": report.rows}}))
"""


def _sample_tree(pid: int, cpu: dict[int, float]) -> int:
    """RSS of the process tree under ``pid`` now; updates ``cpu`` (pid -> CPU seconds so far) on the way.

    The pool workers are children of the forkserver, not of the exporter, so ``getrusage(RUSAGE_CHILDREN)`` would
    miss them: their CPU time is read here, at most one sampling interval short for each process.
    """
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
            times = proc.cpu_times()
            cpu[proc.pid] = max(cpu.get(proc.pid, 0.0), times.user + times.system)
    return total


def run_export(root: Path, export: Path, out: Path, workers: int) -> dict[str, Any]:
    """The exporter in a fresh process; returns its timing and the peak RSS of its process tree."""
    code = _CHILD.format(repo=str(REPO), root=str(root), export=str(export), out=str(out), workers=workers)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    peak = 0
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _sample_tree(child.pid, cpu))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    stop.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"export failed with exit code {child.returncode}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss"] = peak
    result["cpu"] = sum(cpu.values())
    return result


def subset(root: Path, tasks: int, where: Path) -> Path:
    """An export file with the first ``tasks`` tasks of ``root``'s export."""
    with (root / "export.json").open() as handle:
        everything = json.load(handle)
    path = where / f"export-{tasks}.json"
    path.write_text(json.dumps(everything[:tasks]))
    return path


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import imagehash
    import PIL

    versions = (
        f"Python {platform.python_version()}, Pillow {PIL.__version__}, numpy {np.__version__}, "
        f"imagehash {imagehash.__version__}"
    )
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; {versions}"


def mb(value: int) -> str:
    return f"{value / 2**20:.0f} MB"


# --- modes -----------------------------------------------------------------------------------------------


def compare(tasks: int, max_px: int, seed: int, workers: int, repeat: int) -> bool:
    root = generate(tasks, max_px, seed)
    folder = root / "media" / "upload" / "1"
    names = sorted(path.name for path in folder.iterdir())
    size = warm(folder)
    jpeg = sum(name.endswith(".jpg") for name in names)
    print(
        f"data: {tasks} tasks, {len(names)} images ({jpeg} JPEG, {len(names) - jpeg} PNG, {size / 2**20:.0f} MB, "
        f"long side <= {max_px} px)"
    )
    print(f"load average before: {load()}")
    floors, exports = [], []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for _ in range(repeat):  # floor and exporter alternate, so both meet the same background load
            floors.append(floor(folder, names, Path(tmp) / "floor"))
            shutil.rmtree(Path(tmp) / "floor")
            exports.append(run_export(root, root / "export.json", Path(tmp) / "out", workers))
            shutil.rmtree(Path(tmp) / "out")
    floor_seconds, floor_cpu = min(floors)
    result = min(exports, key=lambda r: r["seconds"])
    best = f"best of {repeat}, " if repeat > 1 else ""
    print(
        f"floor (Pillow open+decode+resize+save, 1 process, {best}same images): {floor_seconds:.1f} s wall, "
        f"{floor_cpu:.1f} s CPU, {tasks / floor_seconds:.1f} tasks/s"
    )
    print(
        f"exporter ({workers or os.cpu_count()} workers, all cleaning, {best}fresh process): "
        f"{result['seconds']:.1f} s wall, {result['cpu']:.1f} s CPU, {tasks / result['seconds']:.1f} tasks/s; "
        f"written {result['written']}/{result['in']}, rows {result['rows']}, dropped {result['dropped'] or 'none'}"
    )
    print(f"peak RSS of the exporter's process tree: {mb(result['peak_rss'])}")
    print(f"load average after: {load()}  (other work on the machine slows both runs, not evenly)")
    print(f"CPU ratio exporter / floor: {result['cpu'] / floor_cpu:.2f}  (work per image, whatever the load)")
    ratio = result["seconds"] / floor_seconds
    ok = ratio <= 0.8
    print(f"ratio exporter / floor (wall): {ratio:.2f}  (target <= 0.80: {'PASS' if ok else 'FAIL'})")
    return ok


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def rss_check(seed: int, workers: int) -> bool:
    small, large = 2000, 20000
    root = generate(large, 640, seed)
    warm(root / "media" / "upload" / "1")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-rss-") as tmp:
        for tasks in (small, large):
            export = subset(root, tasks, Path(tmp))
            result = run_export(root, export, Path(tmp) / f"out-{tasks}", workers)
            results[tasks] = result
            print(
                f"{tasks:>6} tasks: {result['seconds']:.1f} s, {tasks / result['seconds']:.1f} tasks/s, "
                f"written {result['written']}, peak RSS {mb(result['peak_rss'])}"
            )
            shutil.rmtree(Path(tmp) / f"out-{tasks}")
    ratio = results[large]["peak_rss"] / results[small]["peak_rss"]
    ok = ratio <= 1.2
    print(f"peak RSS {large} / {small} tasks: {ratio:.2f}  (target <= 1.20: {'PASS' if ok else 'FAIL'})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks (one image each) in the comparison")
    parser.add_argument("--max-px", type=int, default=4000, help="largest image side in the comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="exporter worker processes (0: one per core)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate floor and exporter runs, keep the best")
    parser.add_argument("--rss-check", action="store_true", help="peak RSS at 2,000 vs 20,000 tasks instead")
    parser.add_argument("--prepare", action="store_true", help="only generate (and cache) the data of the mode")
    args = parser.parse_args(argv)
    if args.prepare:
        generate(20000, 640, args.seed) if args.rss_check else generate(args.tasks, args.max_px, args.seed)
        return 0
    print(f"machine: {machine()}")
    if args.rss_check:
        return 0 if rss_check(args.seed, args.workers) else 1
    return 0 if compare(args.tasks, args.max_px, args.seed, args.workers, args.repeat) else 1


if __name__ == "__main__":
    sys.exit(main())
