"""The one exception type for mistakes a person can fix (bad input, missing tool, failed gate).

The CLI catches it, prints its message as one clear block and exits with ``exit_code``;
anything else is a bug and keeps its stack trace.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; the message names the file, field and fix."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class CheckFailed(UserError):
    """A gate, smoke test, policy scan or rollout check failed: the command must fail."""

    exit_code = 1


class NotBuiltYet(UserError):
    """A command whose issue has not landed yet says so instead of pretending."""

    exit_code = 3
