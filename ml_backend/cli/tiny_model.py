"""`labelloop tiny-model DIR --family F`: build the offline tiny Qwen-VL."""

from __future__ import annotations

from pathlib import Path

import click

from ml_backend.settings import FAMILIES


@click.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--family", type=click.Choice(FAMILIES), default="qwen2_vl", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same weights.")
def tiny_model(out_dir: Path, family: str, seed: int) -> None:
    """Build a tiny randomly initialised Qwen-VL in OUT_DIR (offline, a few seconds).

    transformers loads it with its Qwen-VL classes; ms-swift trains it with
    --model OUT_DIR --model_type FAMILY --template FAMILY.
    """
    from ml_backend.tiny_model import build_tiny_model

    path = build_tiny_model(out_dir, family, seed)  # type: ignore[arg-type]
    click.echo(f"{path}  ({family}; train with --model_type {family} --template {family})")
