"""User-facing errors of the engine: the CLI prints the message and exits with code 2."""

from __future__ import annotations


class EngineError(Exception):
    """Bad request (unknown model or dataset, too few dates, missing device, checkpoint mismatch).
    The message says what is wrong and how to fix it."""
