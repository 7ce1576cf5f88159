"""Errors the converters raise for bad input.

Each message names the task, image or field, what was expected and what came. The exporter catches these per
task and reports the task as dropped with that message; the CLI prints them as one line.
"""

from __future__ import annotations


class ConvertError(ValueError):
    """A problem with an input task, annotation or image, explained in its message."""


class ImageError(ConvertError):
    """An image that cannot be used: missing, not an image, truncated, too large, refused by the URL policy."""


class LabelConfigError(ConvertError):
    """A Label Studio label config that cannot be parsed or has nothing labelloop can use."""
