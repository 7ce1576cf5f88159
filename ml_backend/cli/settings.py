"""`labelloop settings`: show the effective configuration, or the documentation table of every setting."""

from __future__ import annotations

import json
from typing import Any

import click
from pydantic import SecretStr

from ml_backend.settings import ENV_PREFIX, Settings


def settings_table() -> str:
    """The Markdown table of every setting (variable, default, description), as the README shows it."""
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default: Any = field.get_default(call_default_factory=True)
        shown = "" if default is None or default in ([], {}, "") else f"`{default}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows) + "\n"


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, (list, dict, int, float, bool)) or value is None:
        return value
    return str(value)


@click.command("settings")
@click.option("--table", is_flag=True, help="Print the Markdown table of all settings (as in the README).")
@click.pass_obj
def settings(obj: Settings, table: bool) -> None:
    """Print the effective settings as JSON (secrets masked), or the table of all settings."""
    if table:
        click.echo(settings_table(), nl=False)
        return
    values = {f"{ENV_PREFIX}{name.upper()}": _shown(getattr(obj, name)) for name in Settings.model_fields}
    click.echo(json.dumps(values, indent=2))
