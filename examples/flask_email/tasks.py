"""The balloons app and the ``send_email`` task.

Every job machine imports this module to find the task, so it imports only balloons and
the standard-library mailer: never Flask.

Machines receive only the environment variables the app allow-lists, so the Mailjet
settings and the dummy outbox directory are listed here. Configure balloons itself through
its own variables (``BALLOONS_REDIS_URL``, ``BALLOONS_SECRET``, ``BALLOONS_HOME``...); with
none set, ``App()`` runs an embedded Valkey and local machines.
"""

from __future__ import annotations

import balloons

from . import mailer

ENV_ALLOWLIST = ("MAILJET_API_KEY", "MAILJET_API_SECRET", "MAILJET_SENDER", "DUMMY_MAIL_DIR")

app = balloons.App(env_allowlist=ENV_ALLOWLIST)


@app.task(memory_mb=256, timeout=60)
def send_email(subject: str, body: str, to_email: str) -> mailer.SendResult:
    """Send one plain-text email; runs on its own machine."""
    return mailer.send(subject=subject, body=body, to=to_email)
