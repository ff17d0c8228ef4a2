"""The exit codes of the ``balloons`` command, and the one place that maps errors to them.

Every command ends through :func:`code_for` (called by the group, ``common._Group``), so a
script can tell a failed job from a timeout, a missing job or a Redis it cannot reach. Click's
own usage errors (an unknown option, a bad value) exit 2 as they always do.
"""

from __future__ import annotations

import enum

from ..errors import ConfigError, JobFailed, JobNotFound, ResultTimeout, StoreDataError, StoreError


class Exit(enum.IntEnum):
    """What ``balloons`` exits with. The help epilog and README's table are made from these."""

    #: The command did what was asked.
    OK = 0
    #: The job failed or was cancelled (its error on stderr), or the command failed otherwise.
    FAILED = 1
    #: Usage: an unknown option, a malformed argument or setting.
    USAGE = 2
    #: A wait (``wait``/``result``/``submit --wait`` with ``--timeout``) ran out of time.
    TIMEOUT = 3
    #: No such job (it never existed, expired or was forgotten).
    NOT_FOUND = 4
    #: Redis cannot be reached (or does not answer as Redis).
    UNREACHABLE = 5


#: One line per code, for ``--help`` and the README.
MEANING = {
    Exit.OK: "ok",
    Exit.FAILED: "the job failed or was cancelled (or another error)",
    Exit.USAGE: "usage: a bad option, argument or setting",
    Exit.TIMEOUT: "timed out waiting (--timeout)",
    Exit.NOT_FOUND: "job not found",
    Exit.UNREACHABLE: "Redis unreachable",
}


def code_for(exc: BaseException) -> Exit:
    """The exit code of an error a command raised (``balloons.errors``, or a ``ValueError`` of
    a bad value)."""
    if isinstance(exc, ResultTimeout):
        return Exit.TIMEOUT
    if isinstance(exc, JobNotFound):
        return Exit.NOT_FOUND
    if isinstance(exc, StoreDataError):  # Redis answered: a key altered in it
        return Exit.FAILED
    if isinstance(exc, StoreError):
        return Exit.UNREACHABLE
    if isinstance(exc, JobFailed):
        return Exit.FAILED
    if isinstance(exc, ConfigError | ValueError):
        return Exit.USAGE
    return Exit.FAILED


def epilog() -> str:
    """The exit codes, as the group's help epilog (``\\b``: click keeps the lines as they are)."""
    lines = [f"  {int(code)}  {MEANING[code]}" for code in Exit]
    return "\b\nExit codes:\n" + "\n".join(lines)
