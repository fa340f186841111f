"""One exception base class and one exit-code rule for every usseg command.

Every error a user can cause (bad data, a bad model file, a device that is not there, a bad
argument) is a :class:`UssegError` subclass whose message names the file, key or field. The
commands turn them into one line on stderr and an exit code:

    0  everything went well
    1  the run finished, but some inputs failed (each one reported)
    2  usage or set-up error: nothing useful could be done
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_SETUP = 2


class UssegError(Exception):
    """Base of every error usseg reports to a user; the message is meant to be read as is."""

    exit_code = EXIT_SETUP


class UsageError(UssegError, ValueError):
    """An argument or option that makes no sense; raised before any heavy work starts."""


class WriteError(UssegError, OSError):
    """An output that could not be written (a full disk, a folder made read-only mid-run): the
    message names the file and why. The run did work, so its exit code is 1; the file's previous
    version, if any, is left as it was (writes go to a temporary name first)."""

    exit_code = EXIT_SOME_FAILED
    path: str | None = None     # the file meant to be written
    reason: str | None = None   # why it could not be, e.g. "No space left on device"

    @classmethod
    def of(cls, path: object, exc: OSError, what: str | None = None) -> "WriteError":
        """``PATH: cannot write WHAT (reason)`` for the OSError ``exc`` met while writing ``path``."""
        if isinstance(exc, WriteError):
            return exc
        reason = exc.strerror or str(exc)
        error = cls(f"{path}: cannot write {what} ({reason})" if what else f"{path}: cannot be written ({reason})")
        error.errno = exc.errno  # (not filename or strerror: str() would then ignore the message)
        error.path, error.reason = str(path), reason
        return error
