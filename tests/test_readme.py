"""The README tells the truth: its settings table is the Settings class, and it shows the two commands."""

from __future__ import annotations

from pathlib import Path

from ml_backend.cli.settings import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_settings_table_matches_the_settings_class() -> None:
    text = README.read_text()
    start = text.index("<!-- settings:start -->\n") + len("<!-- settings:start -->\n")
    end = text.index("<!-- settings:end -->")
    assert text[start:end] == settings_table(), "README settings table is stale: run `labelloop settings --table`"


def test_readme_shows_the_two_commands_a_new_user_types() -> None:
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text
