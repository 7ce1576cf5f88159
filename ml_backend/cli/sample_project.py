"""`labelloop sample-project DIR`: write the realistic sample Label Studio project (demo, bench, tests)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("sample-project")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same project.")
def sample_project(out_dir: Path, seed: int) -> None:
    """Write a sample Label Studio project (images, label config, JSON export) into OUT_DIR."""
    from converters.samples import write_sample_project

    project = write_sample_project(out_dir, seed=seed)
    click.echo(f"{project.tasks} tasks: {project.export}")
    click.echo(f"label config: {project.label_config}")
    click.echo(
        f"export it: labelloop export --input {project.export} --label-config {project.label_config} "
        f"--media-dir {project.media_dir} --local-files-root {project.local_files_root} --out OUT_DIR"
    )
