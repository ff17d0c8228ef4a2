"""The Flask front end: ``POST /send`` queues an email job, ``GET /status/<id>`` reports it.

Run it from the repository root::

    .venv/bin/python -m flask --app examples.flask_email.app run

Each email is sent by a balloons job on its own machine (a fresh local process by
default); this process only validates, submits and reads job records.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

import balloons

from . import tasks

log = logging.getLogger(__name__)

MAX_SUBJECT = 255  # characters
MAX_BODY = 100_000  # characters; far below balloons' argument size limit
MAX_ADDRESS = 254  # characters (RFC 5321)
FIELDS = ("subject", "body", "to")
SUPERVISOR_INTERVAL = 5.0  # seconds between the supervisor's rounds, on Fly
_EMAIL_RE = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]+$")


@dataclass(frozen=True)
class EmailRequest:
    subject: str
    body: str
    to: str


class InvalidField(ValueError):
    """The request's ``field`` is missing or bad; ``message`` says how."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_send_request(data: Any) -> EmailRequest:
    """Validate a ``POST /send`` body; raise :class:`InvalidField` naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidField(
            None, "the request body must be a JSON object with the fields subject, body and to"
        )
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        raise InvalidField(
            unknown[0],
            f"unknown field {unknown[0]!r}: expected only subject, body and to",
        )
    for name in FIELDS:
        if name not in data or data[name] is None:
            raise InvalidField(name, f"missing field {name!r}")
        if not isinstance(data[name], str):
            raise InvalidField(
                name, f"field {name!r} must be a string, not {type(data[name]).__name__}"
            )
        if not data[name].strip():
            raise InvalidField(name, f"field {name!r} must not be empty")
    subject, body, to = data["subject"].strip(), data["body"], data["to"].strip()
    if len(subject) > MAX_SUBJECT:
        raise InvalidField("subject", f"field 'subject' is longer than {MAX_SUBJECT} characters")
    if "\r" in subject or "\n" in subject:
        raise InvalidField("subject", "field 'subject' must be a single line")
    if len(body) > MAX_BODY:
        raise InvalidField("body", f"field 'body' is longer than {MAX_BODY} characters")
    if len(to) > MAX_ADDRESS or not _EMAIL_RE.match(to):
        raise InvalidField("to", "field 'to' must be one email address, like someone@example.com")
    return EmailRequest(subject=subject, body=body, to=to)


def _error(status: int, message: str, **extra: Any) -> ResponseReturnValue:
    return jsonify(error=message, **extra), status


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The Flask app. Jobs go to the balloons app of :mod:`.tasks` (configured from env)."""
    flask_app = Flask(__name__)
    flask_app.config.update(config or {})
    flask_app.extensions["balloons"] = tasks.app
    if tasks.app.settings.backend == "fly":
        # Nothing else notices a Fly machine that dies before recording its job's outcome (a
        # local machine's death is seen by the process that forked it), and /status never
        # waits on a job: the web app supervises. Several processes doing so do no double work.
        supervisor = tasks.app.start_supervisor(interval=SUPERVISOR_INTERVAL)
        flask_app.extensions["balloons_supervisor"] = supervisor

    @flask_app.post("/send")
    def send() -> ResponseReturnValue:
        try:
            email = parse_send_request(request.get_json(force=True, silent=True))
        except InvalidField as exc:
            return _error(400, exc.message, field=exc.field)
        job = tasks.send_email.submit(email.subject, email.body, to_email=email.to)
        log.info("queued email job %s", job.id)
        location = url_for("status", task_id=job.id)
        return jsonify(task_id=job.id), 202, {"Location": location}

    @flask_app.get("/status/<task_id>")
    def status(task_id: str) -> ResponseReturnValue:
        try:
            job = tasks.app.job(task_id)
        except balloons.JobNotFound:  # app.job() reads nothing: the id itself is malformed
            return _error(
                400,
                "malformed task id: expected POOL.ULID as returned by POST /send, "
                "e.g. default.01jd3x9k2m8vq4t7w0c5r6y1zh",
            )
        try:
            if not job.status().terminal:
                return jsonify(status="PENDING")
            result = job.result(timeout=0)  # terminal: returns (or raises) at once
        except balloons.JobNotFound:
            return _error(404, f"no task {task_id} (it never existed, or it expired)")
        except balloons.JobFailed as exc:
            # The remote traceback stays server-side: clients get the reason and a message.
            error_type = exc.error_type.rpartition(".")[2]
            error = f"{error_type}: {exc.error_message}" if error_type else exc.error_message
            return jsonify(status="FAILURE", reason=exc.reason, error=error or exc.reason)
        return jsonify(status="SUCCESS", result=result)

    token = flask_app.config.get("BALLOONS_DASHBOARD_TOKEN")
    if token:  # the balloons dashboard, mounted at /balloons/
        from werkzeug.middleware.dispatcher import DispatcherMiddleware

        from balloons.dashboard import create_wsgi_app

        flask_app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
            flask_app.wsgi_app, {"/balloons": create_wsgi_app(tasks.app, token=token)}
        )

    @flask_app.errorhandler(balloons.StoreError)
    def store_unavailable(exc: balloons.StoreError) -> ResponseReturnValue:
        log.error("job store error: %s", exc)  # the URL in it is masked by balloons
        return _error(503, "the job store is unavailable, try again later")

    @flask_app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        return _error(exc.code or 500, exc.description or exc.name)

    return flask_app


flask_app = create_app(
    {"BALLOONS_DASHBOARD_TOKEN": os.environ.get("BALLOONS_DASHBOARD_TOKEN")}
)

if __name__ == "__main__":  # python -m examples.flask_email.app
    flask_app.run()
