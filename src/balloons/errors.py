"""The one error hierarchy of balloons.

::

    BalloonsError
    ├── ConfigError            a setting is missing, unknown or malformed
    ├── SerializationError     an argument or result cannot be encoded or decoded
    ├── StoreError             Redis cannot be reached or answered wrongly (URL shown masked)
    │   └── PartiallySubmitted ``submit_many`` failed midway: which jobs are stored, which unsure
    ├── JobNotFound            no record for that job id (never existed, expired or forgotten)
    ├── JobFailed              the job ended FAILED or CANCELLED; carries the remote error
    ├── ResultTimeout          also a ``TimeoutError``: ``result(timeout=...)`` ran out of time
    ├── BackendError           a machine backend refused or failed an operation
    │   └── FlyAPIError        the Fly Machines API refused a request or could not be reached
    ├── WorkerError            a worker cannot run its job (bad handoff, bad record, bad signature)
    └── CommandExit            a command job's process exited non-zero (on its machine)

No message, repr or attribute of these errors ever carries a token, a password or the
signing key: URLs are masked with :func:`balloons.config.mask_url` before they are quoted.
"""

from __future__ import annotations

from typing import Any


class BalloonsError(Exception):
    """Base class of every error balloons raises on purpose."""


class ConfigError(BalloonsError):
    """A setting is missing, unknown or malformed."""


class SerializationError(BalloonsError):
    """An argument or a result cannot be serialized or deserialized."""


class StoreError(BalloonsError):
    """Redis could not be reached or gave an unexpected answer."""


class StoreDataError(StoreError):
    """Redis answered, but a key holds another kind of value than balloons writes there
    (``WRONGTYPE``: altered in Redis): not a connection problem."""


class PartiallySubmitted(StoreError):
    """``task.submit_many`` failed after some of its jobs were stored.

    ``jobs`` are the handles of the jobs known stored (in call order, the first calls);
    ``unsure`` the ids of the jobs of the batch in flight, which may or may not be stored
    (look each up with ``app.job(id).status()``); ``unsent`` how many calls after them were
    never sent. The cause is chained (``__cause__``).
    """

    def __init__(self, jobs: list[Any], unsure: list[str], unsent: int, cause: str) -> None:
        self.jobs = jobs
        self.unsure = unsure
        self.unsent = unsent
        super().__init__(
            f"submit_many stored {len(jobs)} job(s), then failed: {cause}; "
            f"{len(unsure)} job(s) of the batch in flight may or may not be stored "
            f"(their ids are in .unsure), {unsent} call(s) were not sent"
        )


class JobNotFound(BalloonsError):
    """No record exists for a job id."""

    def __init__(self, job_id: str, detail: str = "") -> None:
        self.job_id = job_id
        msg = f"job {job_id!r} not found"
        msg += f": {detail}" if detail else " (it never existed, expired, or was forgotten)"
        super().__init__(msg)


class JobFailed(BalloonsError):
    """The job ended without a result.

    ``status`` is ``FAILED`` or ``CANCELLED``; ``reason`` is a short machine-readable cause
    (``task_error``, ``oom``, ``timeout``, ``signature_invalid``, ``exit_code=N``, ...;
    ``result_invalid`` when the stored result or error does not verify with the app's secret);
    ``error_type``, ``error_message`` and ``remote_traceback`` describe the remote exception
    when the task itself raised.
    """

    def __init__(
        self,
        job_id: str,
        status: str,
        reason: str,
        error_type: str = "",
        error_message: str = "",
        remote_traceback: str = "",
    ) -> None:
        self.job_id = job_id
        self.status = status
        self.reason = reason
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = remote_traceback
        what = f"{error_type}: {error_message}" if error_type else error_message
        super().__init__(
            f"job {job_id} {status.lower()} ({reason})" + (f": {what}" if what else "")
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (
                self.job_id,
                self.status,
                self.reason,
                self.error_type,
                self.error_message,
                self.remote_traceback,
            ),
        )


class FlowFailed(JobFailed):
    """A chain or group ended without a result (:mod:`balloons.flows`). ``job_id`` is the
    chain's or group's id, ``member`` the id of the job whose end ended it (empty when it was
    cancelled as a whole); ``status``, ``reason`` and the error are that job's."""

    def __init__(
        self,
        job_id: str,
        status: str,
        reason: str,
        error_type: str = "",
        error_message: str = "",
        remote_traceback: str = "",
        member: str = "",
    ) -> None:
        super().__init__(job_id, status, reason, error_type, error_message, remote_traceback)
        self.member = member
        if member:
            self.add_note(f"ended by its member job {member}")

    def __reduce__(self) -> tuple[Any, ...]:
        cls, args = super().__reduce__()[:2]
        return (cls, (*args, self.member))


class ResultTimeout(BalloonsError, TimeoutError):
    """``Job.result(timeout=...)`` ran out of time before the job finished."""


class BackendError(BalloonsError):
    """A machine backend could not launch, inspect, stop or destroy a machine."""


class FlyAPIError(BackendError):
    """The Fly Machines API answered an error, or could not be reached.

    ``status`` is the HTTP status (``None`` when no answer came), ``error`` Fly's own error
    text, ``request_id`` the ``fly-request-id`` header (quote it to Fly support), ``method`` and
    ``path`` the request. The message says what to fix; it never carries the API token.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str = "",
        request_id: str | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.error = error
        self.request_id = request_id
        self.method = method
        self.path = path
        detail = f" [fly-request-id {request_id}]" if request_id else ""
        super().__init__(message + detail)


class WorkerError(BalloonsError):
    """A worker cannot run its job: missing handoff, malformed record, bad signature."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class CommandExit(BalloonsError):
    """A command job's process exited with a non-zero code (raised on its machine, recorded
    as the attempt's failure with reason ``exit_code=N``; retried only when N is one of the
    job's ``retry_on_exit_codes``)."""

    def __init__(self, exit_code: int, message: str, retryable: bool = False) -> None:
        self.exit_code = exit_code
        self.retryable = retryable
        super().__init__(message)
