"""labelloop's exception hierarchy.

Every error a user can cause derives from :class:`LabelloopError` (a ``ValueError``), carries a message that
names the field, what was expected and what came, and is turned into a one-line CLI error or a JSON 4xx by
the edges. Anything else is a bug and is logged with its traceback, never shown to a client.
"""

from __future__ import annotations


class LabelloopError(ValueError):
    """Base class: a problem with input or configuration, explained in its message."""


class ConfigError(LabelloopError):
    """Settings or a label config that cannot be used."""
