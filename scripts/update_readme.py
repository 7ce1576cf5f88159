"""Rewrite the README's generated settings table from the Settings class (`make readme`)."""

from __future__ import annotations

from pathlib import Path

from ml_backend.cli.settings import settings_table

START, END = "<!-- settings:start -->\n", "<!-- settings:end -->"


def main() -> None:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + settings_table() + END + tail)


if __name__ == "__main__":
    main()
