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
