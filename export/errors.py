"""The errors of the export stage, in one module so that every step can raise them without
importing the command line."""

from __future__ import annotations

from usseg.runtime.errors import UssegError


class ExportError(UssegError, RuntimeError):
    """Export cannot go on: the message says which input is wrong."""


class VerificationError(UssegError, RuntimeError):
    """The exported model does not match its source within tolerance."""
