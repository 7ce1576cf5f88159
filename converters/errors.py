"""Errors the converters raise for bad input.

Each message names the task, image or field, what was expected and what came. The exporter catches these per
task and reports the task as dropped with that message; the CLI prints them as one line.

Every error also carries a short ``reason`` code (``image_missing``, ``not_accepted``, ...): the exporter's
report counts dropped tasks by it, so the code is stable while the message can say more.
"""

from __future__ import annotations

from typing import Any


class ConvertError(ValueError):
    """A problem with an input task, annotation or image, explained in its message.

    Args:
        message: what is wrong, naming the task, field or image.
        reason: a short stable code the export report groups drops by.
    """

    default_reason = "invalid_task"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep ``reason`` when the error crosses a process boundary (the exporter's image workers).
        return (_rebuild, (type(self), str(self), self.reason))


def _rebuild(cls: type[ConvertError], message: str, reason: str) -> ConvertError:
    return cls(message, reason=reason)


class ImageError(ConvertError):
    """An image that cannot be used: missing, not an image, truncated, too large, refused by the URL policy."""

    default_reason = "image_unusable"


class LabelConfigError(ConvertError):
    """A Label Studio label config that cannot be parsed or has nothing labelloop can use."""

    default_reason = "label_config"


class ExportInvariantError(RuntimeError):
    """The exporter lost track of a task (tasks in != written + dropped): a bug, never a user's mistake."""
