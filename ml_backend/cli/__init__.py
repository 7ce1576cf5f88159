"""The `labelloop` command.

Subcommands live in one module each under ``ml_backend.cli`` and are imported only when invoked, so
``labelloop --help`` and the light commands never import torch, transformers or ms-swift. To add one, write
``ml_backend/cli/<name>.py`` exposing a click command (or group) and list it in ``COMMANDS``.

Settings are built here, at the process edge, and handed to the subcommand through the click context
(``ctx.obj``). A :class:`~ml_backend.exceptions.LabelloopError` or :class:`~converters.errors.ConvertError`
ends the command with a one-line error and exit code 2; nothing prints a traceback for a user's mistake.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from converters.errors import ConvertError
from ml_backend.exceptions import LabelloopError

# command name -> "module:attribute" (module relative to ml_backend.cli) and its one-line help.
COMMANDS: dict[str, tuple[str, str]] = {
    "tiny-model": ("tiny_model:tiny_model", "Build a tiny random Qwen-VL offline (tests, benches, demo)."),
    "marks": ("marks:marks", "Detect marks people drew on screenshots (boxes, ellipses, arrows, highlights)."),
    "settings": ("settings:settings", "Show the effective settings, or the table of all of them."),
    "setup": ("setup:setup", "Create or update a Label Studio project wired to labelloop (idempotent)."),
    "export": ("export:export", "Export completed Label Studio tasks to cleaned ms-swift JSONL with a report."),
    "sample-project": ("sample_project:sample_project", "Write a realistic sample Label Studio project (demo, tests)."),
    "worker": ("worker:worker", "Run the RQ worker (with its scheduler) for training and reconciliation."),
    "models": ("models:models", "List and show adapter versions; roll a project back to an earlier one."),
    "runs": ("runs:runs", "List and show training runs (progress, evaluation, report); cancel one."),
    "serve": ("serve:serve", "Serve the ML backend for Label Studio (gunicorn; --dev for werkzeug)."),
    "predict": ("predict:predict", "Pre-annotate a whole Label Studio project (an RQ job, or --inline)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        module = importlib.import_module(f"ml_backend.cli.{module_name}")
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="labelloop")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """labelloop: Label Studio annotations -> Qwen-VL pre-annotations and ms-swift fine-tuning, in a loop.

    Configuration comes from LABELLOOP_* environment variables (or .env); see the README's settings table.
    """
    from ml_backend.settings import load_settings

    ctx.obj = load_settings()
    logging.basicConfig(
        level=ctx.obj.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: run the CLI, turning user errors into one line on stderr and exit code 2."""
    try:
        return cli.main(args=argv, prog_name="labelloop", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (LabelloopError, ConvertError) as exc:
        click.echo(f"labelloop: error: {exc}", err=True)
        sys.exit(2)
