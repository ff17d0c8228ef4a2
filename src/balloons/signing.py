"""HMAC-SHA256 signatures over job records: a worker runs only what the app's secret signed."""

from __future__ import annotations

import hmac

_DOMAIN = b"balloons/job/v1\n"


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
