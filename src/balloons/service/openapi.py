"""The OpenAPI 3.1 document of the producer API, served at ``/v1/openapi.json``.

Written by hand beside the routes of :mod:`balloons.service.api`; ``tests/test_service_openapi``
runs schemathesis against a served instance with it, so a route and its document cannot
drift apart unnoticed.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from . import webhooks
from .idempotency import MAX_KEY_LENGTH
from .listing import MAX_LIMIT
from .resources import STATES
from .submission import MAX_LABEL_VALUE, MAX_LABELS, MAX_RETRIES, MAX_SECONDS

VERSION = "1.0.0"
PROBLEM = "application/problem+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM: {"schema": _ref("Problem")}},
    }
    if retry_after:
        out["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return out


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    return {"description": description, "content": content, **extra}


_AUTHED = {
    "401": _problem("No key, or an unknown or revoked one (problem code unauthenticated)"),
    "403": _problem("The key lacks the scope (insufficient-scope)"),
    "503": _problem("Redis is unreachable (store-unavailable)", retry_after=True),
}
#: What Redis holds for the request is a key of another type (altered in Redis).
_CORRUPT = {"409": _problem("What Redis holds cannot be read (record-invalid)")}
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 200},
    "description": "A job id, POOL.ULID",
}
_NULLABLE_STR = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_VALUE: dict[str, Any] = {"description": 'Any JSON value; {"$bytes": BASE64} stands for bytes'}

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "job_id": {"type": "string"},
        },
    },
    "Error": {
        "type": ["object", "null"],
        "required": ["type", "message", "traceback"],
        "properties": {
            "type": {"type": "string"},
            "message": _NULLABLE_STR,
            "traceback": _NULLABLE_STR,
        },
    },
    "Labels": {
        "type": "object",
        "maxProperties": MAX_LABELS,
        "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"},
        "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE},
    },
    "JobSummary": {
        "type": "object",
        "required": [
            "id",
            "kind",
            "state",
            "pool",
            "task",
            "attempt",
            "reason",
            "exit_code",
            "machine_id",
            "labels",
            "created_at",
            "scheduled_at",
            "started_at",
            "ended_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "kind": {"enum": ["task", "command"]},
            "state": {"enum": list(STATES)},
            "pool": {"type": "string"},
            "task": _NULLABLE_STR,
            "attempt": {"type": "integer", "minimum": 0},
            "reason": _NULLABLE_STR,
            "exit_code": {"type": ["integer", "null"]},
            "machine_id": _NULLABLE_STR,
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "created_at": _TIME,
            "scheduled_at": _TIME,
            "started_at": _TIME,
            "ended_at": _TIME,
        },
    },
    "Job": {
        "allOf": [
            _ref("JobSummary"),
            {
                "type": "object",
                "required": ["max_attempts", "result", "error", "callback"],
                "properties": {
                    "max_attempts": {"type": ["integer", "null"], "minimum": 1},
                    "result": _VALUE,
                    "error": _ref("Error"),
                    "callback": _ref("Callback"),
                },
            },
        ]
    },
    **webhooks.SCHEMAS,
    "Machine": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "cpus": {"type": "integer", "minimum": 1, "maximum": 256},
            "memory_mb": {"type": "integer", "minimum": 1, "maximum": 4 * 1024 * 1024},
            "region": {
                "type": "string",
                "description": "Not supported per job: answered 422 option-unsupported",
            },
        },
    },
    "Common": {
        "type": "object",
        "properties": {
            "input": _VALUE,
            "pool": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
            "retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
            "machine": _ref("Machine"),
            "at": {"type": "string", "format": "date-time"},
            "delay": {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
            "labels": _ref("Labels"),
            "callback": webhooks.REQUEST_SCHEMA,
        },
    },
    "TaskJobRequest": {
        "allOf": [
            _ref("Common"),
            {
                "type": "object",
                "required": ["task"],
                "properties": {
                    "task": {"type": "string", "description": "module:function"},
                    "args": {"type": "array", "items": _VALUE},
                    "kwargs": {"type": "object", "additionalProperties": _VALUE},
                },
            },
        ]
    },
    "CommandJobRequest": {
        "allOf": [
            _ref("Common"),
            {
                "type": "object",
                "required": ["command"],
                "properties": {
                    "command": {
                        "type": "object",
                        "required": ["cmd"],
                        "additionalProperties": False,
                        "properties": {
                            "image": {"type": "string"},
                            "cmd": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                            "env": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                    "retry_on_exit_codes": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1, "maximum": 255},
                    },
                },
            },
        ]
    },
    "JobPage": {
        "type": "object",
        "required": ["jobs", "next"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("JobSummary")},
            "next": _NULLABLE_STR,
        },
    },
    "Task": {
        "type": "object",
        "required": ["name", "pool", "timeout", "retries", "cpus", "memory_mb"],
        "properties": {
            "name": {"type": "string"},
            "pool": {"type": "string"},
            "timeout": {"type": "number"},
            "retries": {"type": "integer"},
            "cpus": {"type": ["integer", "null"]},
            "memory_mb": {"type": ["integer", "null"]},
        },
    },
    "Pool": {
        "type": "object",
        "required": ["pool", "max_machines", "machines", "queued", "delayed"],
        "properties": {
            "pool": {"type": "string"},
            "max_machines": {"type": "integer"},
            "min_machines": {"type": "integer"},
            "idle_timeout": {"type": "number"},
            "standby_max": {"type": "integer"},
            "standby": {"type": "integer"},
            "isolation": {"type": "string"},
            "machines": {"type": "integer"},
            "starting": {"type": "integer"},
            "running": {"type": "integer"},
            "idle": {"type": "integer"},
            "queued": {"type": "integer"},
            "delayed": {"type": "integer"},
        },
    },
}

_PATHS: dict[str, Any] = {
    "/v1/jobs": {
        "post": {
            "operationId": "submitJob",
            "summary": "Submit a task job or a command job",
            "security": [{"bearer": ["jobs:write"]}],
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                    "description": "Honoured for 24 h per API key",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [_ref("TaskJobRequest"), _ref("CommandJobRequest")]}
                    }
                },
            },
            "responses": {
                "201": _json(
                    "Submitted",
                    _ref("Job"),
                    headers={"Location": {"schema": {"type": "string"}}},
                ),
                "200": _json("A replay of an Idempotency-Key: the same job", _ref("Job")),
                "400": _problem("The body or a header is invalid (invalid-request, ...)"),
                "409": _problem(
                    "A request with this Idempotency-Key is in flight (idempotency-in-flight), "
                    "or what Redis holds cannot be read (record-invalid, "
                    "idempotency-record-invalid)",
                    retry_after=True,
                ),
                "413": _problem("The body is over 1 MiB (body-too-large)"),
                "415": _problem("The body is not JSON (unsupported-media-type)"),
                "422": _problem(
                    "Unknown task, arguments that do not bind, an Idempotency-Key reused with "
                    "another body, an unsupported option, a callback with no secret to sign it "
                    "(callback-secret-required)"
                ),
                "404": _problem("A replayed key's job is gone (job-not-found)"),
                **_AUTHED,
            },
        },
        "get": {
            "operationId": "listJobs",
            "summary": "List jobs, newest first",
            "security": [{"bearer": ["jobs:read"]}],
            "parameters": [
                {"name": "state", "in": "query", "schema": {"enum": list(STATES)}},
                {"name": "pool", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "label",
                    "in": "query",
                    "schema": {"type": "array", "items": {"type": "string"}},
                    "style": "form",
                    "explode": True,
                    "description": "NAME or NAME=VALUE; repeat to require several",
                },
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                },
            ],
            "responses": {
                "200": _json("A page of jobs", _ref("JobPage")),
                "400": _problem("A bad filter, limit or cursor"),
                **_CORRUPT,
                **_AUTHED,
            },
        },
    },
    "/v1/jobs/{job_id}": {
        "get": {
            "operationId": "getJob",
            "summary": "One job; with wait, blocks until it ends (at most 30 s)",
            "security": [{"bearer": ["jobs:read"]}],
            "parameters": [
                _JOB_ID,
                {
                    "name": "wait",
                    "in": "query",
                    "schema": {"type": "number", "minimum": 0, "maximum": 30},
                },
            ],
            "responses": {
                "200": _json("The job", _ref("Job")),
                "400": _problem("A bad wait"),
                "404": _problem("No such job (job-not-found)"),
                "429": _problem("Too many long-polls open (too-many-waiters)", retry_after=True),
                **_CORRUPT,
                **_AUTHED,
            },
        }
    },
    "/v1/jobs/{job_id}/cancel": {
        "post": {
            "operationId": "cancelJob",
            "summary": "Cancel a job",
            "security": [{"bearer": ["jobs:write"]}],
            "parameters": [_JOB_ID],
            "responses": {
                "202": _json("Cancelled: its machine is told to stop", _ref("Job")),
                "404": _problem("No such job (job-not-found)"),
                "409": _problem(
                    "The job has already ended (job-finished), or what Redis holds cannot be "
                    "read (record-invalid)"
                ),
                **_AUTHED,
            },
        }
    },
    "/v1/jobs/{job_id}/logs": {
        "get": {
            "operationId": "jobLogs",
            "summary": "The job's output as server-sent events",
            "description": (
                "Each line is a `log` event whose `id` is its stream entry id and whose data is "
                "JSON {time, attempt, source, text}; `Last-Event-ID` (or ?after=) resumes after "
                "an id. A comment is sent every 15 s while quiet; an `end` event (data "
                "{state}) closes the stream once the job has ended."
            ),
            "security": [{"bearer": ["jobs:read"]}],
            "parameters": [
                _JOB_ID,
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"},
                },
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"},
                },
            ],
            "responses": {
                "200": {
                    "description": "The event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _problem("A bad Last-Event-ID"),
                "404": _problem("No such job (job-not-found)"),
                "429": _problem("Too many streams open (too-many-waiters)", retry_after=True),
                **_CORRUPT,
                **_AUTHED,
            },
        }
    },
    "/v1/tasks": {
        "get": {
            "operationId": "listTasks",
            "summary": "The tasks registered in the service's app",
            "security": [{"bearer": ["jobs:read"]}],
            "responses": {
                "200": _json(
                    "The tasks",
                    {
                        "type": "object",
                        "required": ["tasks"],
                        "properties": {"tasks": {"type": "array", "items": _ref("Task")}},
                    },
                ),
                **_AUTHED,
            },
        }
    },
    "/v1/pools": {
        "get": {
            "operationId": "listPools",
            "summary": "The pools and their machines",
            "security": [{"bearer": ["jobs:read"]}],
            "responses": {
                "200": _json(
                    "The pools",
                    {
                        "type": "object",
                        "required": ["pools"],
                        "properties": {"pools": {"type": "array", "items": _ref("Pool")}},
                    },
                ),
                **_CORRUPT,
                **_AUTHED,
            },
        }
    },
    "/v1/health": {
        "get": {
            "operationId": "health",
            "summary": "200 while the service runs (no key needed)",
            "security": [],
            "responses": {
                "200": _json(
                    "Running",
                    {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
                )
            },
        }
    },
}


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "balloons job service",
            "version": VERSION,
            "description": (
                "Submit jobs, wait for them and read their output over HTTP. Every error is "
                "application/problem+json (RFC 9457) with a `code` member."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: balloons keys create NAME --scope ...",
                }
            },
        },
    }


def document() -> dict[str, Any]:
    """The document (a fresh copy)."""
    return copy.deepcopy(_document())
