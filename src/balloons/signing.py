"""HMAC-SHA256 signatures: a worker runs only what the app's secret signed, and a reader decodes
only outcomes a holder of the secret wrote.

A job's record is signed by its client (:func:`sign`). What a machine writes back (the
result, the error, the progress) and a retry's permission to run another attempt are tagged
with :func:`sign_outcome`, bound to one kind of value, one job and one attempt; readers check
the tag (:func:`verify_outcome`) before they decode anything.
"""

from __future__ import annotations

import hmac
import json

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

_DOMAIN = b"balloons/job/v1\n"
_OUTCOME = b"balloons/outcome/v1\n"
_POOL = b"balloons/pool/v1\n"
#: A payload's record TTL when it names none (one written before payloads did).
DEFAULT_TTL = 24 * 3600
#: Characters of an error's message kept with its attempt (``summary``, tagged on its own).
SUMMARY_CHARS = 500


def sign(secret: bytes, payload: bytes, args: bytes) -> str:
    """Hex signature binding a job's payload (which names its id) to its arguments."""
    # One-shot HMAC: cheaper than a streaming object on every submit; same bytes signed.
    message = b"".join((_DOMAIN, len(payload).to_bytes(8, "big"), payload, args))
    return hmac.digest(secret, message, "sha256").hex()


def verify(secret: bytes, payload: bytes, args: bytes, signature: bytes | str) -> bool:
    """Constant-time check of :func:`sign`'s output. Compares bytes, so that a signature
    altered into any bytes at all is refused, never an error."""
    sig = signature if isinstance(signature, bytes) else signature.encode("utf-8", "replace")
    return hmac.compare_digest(sign(secret, payload, args).encode(), sig)


def sign_pool(secret: bytes, pool: str, conf: str) -> str:
    """Hex signature binding a pool's settings (``conf``, the ``name value`` pairs a submit
    stores in its ``cfg`` hash) to the pool's name, so that settings copied to another pool,
    or written into Redis, do not verify."""
    message = b"".join((_POOL, pool.encode(), b"\n", conf.encode()))
    return hmac.digest(secret, message, "sha256").hex()


def verify_pool(secret: bytes, pool: str, conf: str, signature: str) -> bool:
    """Constant-time check of :func:`sign_pool`'s output (never an error)."""
    return hmac.compare_digest(sign_pool(secret, pool, conf).encode(), signature.encode())


def sign_outcome(secret: bytes, kind: str, job_id: str, attempt: int, data: bytes) -> str:
    """``ATTEMPT:HEX``: a tag binding ``data`` of one ``kind`` (``result/SERIALIZER``,
    ``error``, ``message``, ``progress``, ``grant``) to one attempt of one job, so that a value
    copied to another job, attempt or kind does not verify."""
    head = f"{kind}\n{job_id}\n{attempt}\n".encode()
    return f"{attempt}:{hmac.digest(secret, _OUTCOME + head + data, 'sha256').hex()}"


def verify_outcome(
    secret: bytes, kind: str, job_id: str, data: bytes, tag: bytes | str | None
) -> int | None:
    """The attempt that ``tag`` binds ``data`` to, or None when it does not verify (a missing
    or malformed tag included; never an error)."""
    if not tag:
        return None
    raw = tag if isinstance(tag, bytes) else tag.encode("utf-8", "replace")
    n, sep, _ = raw.partition(b":")
    if not sep or not n.isdigit() or len(n) > 9:
        return None
    attempt = int(n)
    expected = sign_outcome(secret, kind, job_id, attempt, data).encode()
    return attempt if hmac.compare_digest(expected, raw) else None


def result_serializer(
    secret: bytes, job_id: str, rec: Mapping[str, bytes], names: Iterable[str]
) -> str | None:
    """The serializer, of ``names``, whose tag on a job record's result (``result``, ``rsig``)
    verifies for the record's ``attempt`` (the one that succeeded); None when none does.
    Nothing is decoded."""
    data, tag, raw = rec.get("result") or b"", rec.get("rsig"), rec.get("attempt") or b""
    attempt = int(raw) if raw.isdigit() and len(raw) < 10 else -1
    for name in names:
        if verify_outcome(secret, f"result/{name}", job_id, data, tag) == attempt:
            return name
    return None


def seal_error(secret: bytes, job_id: str, attempt: int, error: dict[str, str]) -> tuple[str, str]:
    """An error record as stored (JSON text) and its tag. It carries its message's first
    :data:`SUMMARY_CHARS` characters (``summary``) with a tag of their own (``msig``): the end
    script copies both into the attempt's record, so each attempt's message is checked too."""
    summary = str(error.get("message", ""))[:SUMMARY_CHARS]
    summary = summary.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    msig = sign_outcome(secret, "message", job_id, attempt, summary.encode())
    text = json.dumps({**error, "summary": summary, "msig": msig})
    return text, sign_outcome(secret, "error", job_id, attempt, text.encode())


def sign_grant(secret: bytes, job_id: str, attempt: int, when: float) -> str:
    """``WHEN ATTEMPT:HEX``: the permission to run ``attempt`` (a retry) of a job, given at
    ``when``. A worker runs an attempt after the first only with a grant that verifies."""
    stamp = f"{when:.3f}"
    return f"{stamp} {sign_outcome(secret, 'grant', job_id, attempt, stamp.encode())}"


def verify_grant(
    secret: bytes, job_id: str, attempt: int, grant: bytes | str | None
) -> float | None:
    """When the grant for ``attempt`` was given, or None when it does not verify."""
    if not grant:
        return None
    raw = grant if isinstance(grant, bytes) else grant.encode("utf-8", "replace")
    stamp, sep, tag = raw.partition(b" ")
    if not sep or verify_outcome(secret, "grant", job_id, stamp, tag) != attempt:
        return None
    return float(stamp)


def run_by(
    secret: bytes, job_id: str, attempt: int, spec: Mapping[str, Any], grant: bytes | str | None
) -> float | None:
    """Until when ``attempt`` of the job whose verified payload is ``spec`` may run: its
    payload's ``ttl`` past its creation (the first attempt) or past its retry's grant (a later
    one). None when a later attempt has no grant that verifies. ``ValueError``, ``KeyError`` or
    ``TypeError`` for a payload without a usable ``created`` or ``ttl``."""
    if attempt == 1:
        since: float | None = float(spec["created"])
    else:
        since = verify_grant(secret, job_id, attempt, grant)
    if since is None:
        return None
    return since + float(spec.get("ttl") or DEFAULT_TTL)
