"""The one exception route handlers raise to answer with a Fly-shaped error.

Fly answers errors as ``{"error": "<message>"}``, sometimes with a ``status`` from the
spec's ``main.statusCode`` enum (``unknown``, ``insufficient_capacity``).
"""

from __future__ import annotations

from typing import Any

#: Fly's exact messages, quoted by clients that match on them.
APP_NOT_FOUND = "app not found"
MACHINE_NOT_FOUND = "machine not found"
AUTH_FAILED = "Authenticate: token validation error"


class ApiError(Exception):
    """An HTTP error answer: status code, message and the optional ``status`` field."""

    def __init__(self, status_code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        """The JSON body Fly sends for this error."""
        body: dict[str, Any] = {"error": self.message}
        if self.status is not None:
            body["status"] = self.status
        return body


def bad_request(message: str) -> ApiError:
    """400 with ``message``."""
    return ApiError(400, message)


def precondition(message: str) -> ApiError:
    """412, Fly's answer to an operation the machine's current state does not allow."""
    return ApiError(412, f"failed_precondition: {message}")
