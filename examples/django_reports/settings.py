"""Django settings of the example: a project of one app (this package), no database.

balloons reads its settings from ``BALLOONS``: the keyword arguments of ``balloons.App``.
What is not given there comes from balloons' own environment variables (``BALLOONS_REDIS_URL``,
``BALLOONS_SECRET``, ...): with none set, an embedded Valkey and local machines.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "examples.django_reports.urls"
INSTALLED_APPS = ["examples.django_reports"]  # for its management command
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

BALLOONS = {
    # Job machines import the tasks module, which reads these settings: let them find them.
    "env_allowlist": ["DJANGO_SETTINGS_MODULE"],
}
