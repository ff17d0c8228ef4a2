"""pytest fixtures of balloons' test mode. A project enables them in its top-level
``conftest.py``::

    pytest_plugins = ["balloons.testing.pytest_plugin"]

(or with ``pytest -p balloons.testing.pytest_plugin``). It is not loaded on its own wherever
balloons is installed: a plugin loaded before a coverage tool starts would hide the import of
the user's own code from it.

* ``balloons_server``: a Valkey of the test's own, on a unix socket in the test's temporary
  directory, with a fresh namespace and signing key (:class:`balloons.testing.Server`).

Run an app's jobs inline on it with :func:`balloons.testing.inline`::

    @pytest.fixture
    def jobs(balloons_server):
        with inline(app, balloons_server):
            yield app
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from . import Server, server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def balloons_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Valkey of this test's own, with a fresh namespace and key; stopped after it."""
    # A short directory: a unix socket's path has a length limit (about 100 bytes).
    directory: Path = tmp_path_factory.mktemp("valkey", numbered=True)
    with server(directory) as s:
        yield s
