"""labelloop's ML backend, retraining loop and CLI (see docs/architecture.md)."""

__version__ = "0.1.0"
