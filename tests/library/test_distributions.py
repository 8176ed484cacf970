"""The sdist and the wheel a release ships: built, checked, installed and used.

Once per module, outside the checkout:

- ``python -m build --no-isolation`` builds the sdist and then the wheel from
  the sdist, as a release does (so the sdist holds what a build needs).
  hatchling comes from the dev group at the pin of ``[build-system]``, which
  build checks; nothing is downloaded.
- A fresh venv gets the runtime dependencies of the ``grpc``, ``embedded``
  and ``cli`` extras at the versions of uv.lock (``uv sync --no-install-project``, from
  uv's cache: offline), then the wheel with those extras, offline and
  constrained to the lock: the wheel's own requirements must be met by the
  locked set, so no version outside the lock is ever resolved. (``uv pip
  install`` alone would need PyPI's index pages, which uv's cache of a locked
  sync does not hold; ``make lint`` keeps the lock equal to pyproject.toml.)

Then the installed console scripts and an example run in that venv, from a
directory outside the checkout, with an environment that cannot reach the
checkout's packages.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

import pytest

import windshift
from tests.library.test_examples import DUPLICATE, EMBEDDED, published_in
from windshift_grpc.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".uv" / "bin" / "uv"  # the Makefile's pinned uv
TIMEOUT = 120  # seconds for one build, install or example run
VERSION = windshift.__version__

# Where a checkout keeps local state that a release must never ship.
LOCAL_ONLY = {
    ".git",
    ".venv",
    ".uv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".windshift",
    "build",
    "dist",
}


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; fail with its output unless it exits 0; return stdout."""
    completed = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {completed.returncode}\n"
        f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    )
    return completed.stdout


def outside_env() -> dict[str, str]:
    """Our environment without what would point a child at the checkout or its venv.

    ``UV_PROJECT_ENVIRONMENT`` is the Makefile's (.venv); NATS_SERVER_BIN would
    hand the example the checkout's nats-server instead of the venv's own.
    """
    leaking = {
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "UV_PROJECT_ENVIRONMENT",
        "NATS_SERVER_BIN",
        "NATS_URL",
    }
    env = {key: value for key, value in os.environ.items() if key not in leaking}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Installed:
    venv: Path
    home: Path  # a working directory outside the checkout
    env: dict[str, str]  # PATH: the venv's scripts, then the system's only

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    assert not out.is_relative_to(ROOT)
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=out)
    return Built(sdist=only(list(out.glob("*.tar.gz"))), wheel=only(list(out.glob("*.whl"))))


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    assert UV.exists(), f"{UV} is missing: `make .venv/bin/.installed` installs it"
    home = tmp_path_factory.mktemp("user")
    venv = home / "venv"
    env = outside_env()
    # The dependencies, exactly as locked. --offline: uv's cache has every file
    # of the lock once `make` has run; a cache miss fails here, it never resolves.
    run(
        UV,
        *("sync", "--project", ROOT, "--frozen", "--offline", "--no-dev"),
        *("--no-install-project", "--extra", "grpc", "--extra", "embedded", "--extra", "cli"),
        *("--python", sys.executable),
        cwd=home,
        env={**env, "UV_PROJECT_ENVIRONMENT": str(venv)},
    )
    locked = home / "constraints.txt"
    locked.write_text(
        run(
            UV,
            *("export", "--project", ROOT, "--frozen", "--no-hashes", "--all-extras"),
            "--no-emit-project",
            cwd=home,
            env=env,
        )
    )
    python = venv / "bin" / "python"

    def installed_packages() -> set[str]:
        return set(run(UV, "pip", "freeze", "--python", python, cwd=home, env=env).splitlines())

    before = installed_packages()
    run(
        UV,
        *("pip", "install", "--offline", "--python", python),
        *("-c", locked, f"{built.wheel}[grpc,embedded,cli]"),
        cwd=home,
        env=env,
    )
    # The wheel's requirements, extras included, were all met by the locked set.
    assert installed_packages() - before == {f"windshift @ {built.wheel.as_uri()}"}
    assert before <= installed_packages()
    return Installed(
        venv=venv, home=home, env={**env, "PATH": f"{venv / 'bin'}{os.pathsep}{os.defpath}"}
    )


# -- one version number ------------------------------------------------------------


def test_the_version_is_windshift_dunder_version_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "windshift/__init__.py"
    # The installed (editable) metadata agrees; stale metadata means a missing reinstall.
    assert importlib.metadata.version("windshift") == VERSION


@pytest.mark.parametrize("argv", [["--version"], ["serve", "--version"]])
def test_cli_version_prints_the_version_and_exits_0(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"windshift-grpc {VERSION}\n"


# -- the built files ---------------------------------------------------------------


def test_twine_check_passes(built: Built) -> None:
    run(sys.executable, "-m", "twine", "check", "--strict", built.sdist, built.wheel, cwd=ROOT)


def test_the_file_names_and_metadata_carry_windshift_dunder_version(built: Built) -> None:
    assert built.sdist.name == f"windshift-{VERSION}.tar.gz"
    assert built.wheel.name == f"windshift-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(built.wheel) as wheel:
        metadata = HeaderParser().parsestr(
            wheel.read(f"windshift-{VERSION}.dist-info/METADATA").decode()
        )
    assert metadata["Name"] == "windshift"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])


def test_the_sdist_holds_the_sources_and_nothing_local(built: Built) -> None:
    prefix = f"windshift-{VERSION}/"
    with tarfile.open(built.sdist) as sdist:
        names = sdist.getnames()
    assert all(name.startswith(prefix) for name in names), names
    files = {name.removeprefix(prefix) for name in names}
    for needed in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "PKG-INFO",
        "windshift/__init__.py",
        "windshift/py.typed",
        "windshift_grpc/py.typed",
        "windshift_grpc/proto.py",
        "windshift_grpc/_proto/windshift/events/v1alpha1/service_pb2.pyi",
        "proto/windshift/events/v1alpha1/service.proto",
        "proto/windshift/state/v1alpha1/service.proto",
        "docs/getting-started.md",
        "examples/publish.py",
        "tests/conftest.py",
    ):
        assert needed in files, f"the sdist lacks {needed}"
    shipped_locally = sorted(
        name
        for name in files
        if LOCAL_ONLY & set(PurePosixPath(name).parts) or name.endswith(".pyc")
    )
    assert shipped_locally == []


def test_the_wheel_holds_both_packages_their_types_and_the_generated_code(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        files = set(wheel.namelist())
        entry_points = wheel.read(f"windshift-{VERSION}.dist-info/entry_points.txt").decode()
    assert {PurePosixPath(name).parts[0] for name in files} == {
        "windshift",
        "windshift_grpc",
        f"windshift-{VERSION}.dist-info",
    }
    assert {"windshift/py.typed", "windshift_grpc/py.typed", "windshift_grpc/proto.py"} <= files
    generated = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "windshift_grpc" / "_proto").rglob("*_pb2*.py")
    ]
    assert len(generated) == 4  # events and state: messages and gRPC stubs
    for module in generated:
        assert module in files, f"the wheel lacks {module}"
        assert f"{module}i" in files, f"the wheel lacks the stub {module}i"
    assert "windshift-grpc = windshift_grpc.cli:main" in entry_points
    assert "windshift = windshift._cli:main" in entry_points
    # The web console's pages, served from the package.
    static = ROOT / "windshift_grpc" / "console" / "static"
    for page in static.iterdir():
        shipped = f"windshift_grpc/console/static/{page.name}"
        assert shipped in files, f"the wheel lacks {shipped}"


# -- installed from the wheel, used from outside the checkout -----------------------


@pytest.mark.parametrize("argv", [["--version"], ["serve", "--version"]])
def test_the_installed_windshift_grpc_prints_its_version(
    installed: Installed, argv: list[str]
) -> None:
    script = installed.venv / "bin" / "windshift-grpc"
    out = run(script, *argv, cwd=installed.home, env=installed.env)
    assert out == f"windshift-grpc {VERSION}\n"


def test_the_installed_windshift_prints_its_version(installed: Installed) -> None:
    # The cli extra brings what the command imports (typer, rich).
    out = run(
        installed.venv / "bin" / "windshift", "--version", cwd=installed.home, env=installed.env
    )
    assert out == f"windshift {VERSION}\n"


def test_the_grpc_extra_brings_what_the_server_imports(installed: Installed) -> None:
    # The server's modules, the public stubs and the generated code, which checks
    # the installed grpcio and protobuf versions on import; nkeys for NATS_CREDS.
    code = (
        "import nkeys, windshift_grpc.proto, windshift_grpc.server; print(windshift_grpc.__file__)"
    )
    out = run(installed.python, "-I", "-c", code, cwd=installed.home, env=installed.env)
    assert Path(out.strip()).is_relative_to(installed.venv), out


# Runs the script as `python script` would (its directory first on sys.path,
# here for orders_pb2), then says where the windshift it used came from.
_RUN_SCRIPT = """
import os, runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
try:
    runpy.run_path(script, run_name="__main__")
finally:
    print("windshift imported from", sys.modules["windshift"].__file__)
"""


def test_the_publish_example_runs_on_the_installed_wheel(installed: Installed) -> None:
    assert (installed.venv / "bin" / "nats-server").exists(), "the embedded extra is missing"
    # -I: no PYTHONPATH, no user site, no working directory on sys.path.
    out = run(
        installed.python,
        *("-I", "-c", _RUN_SCRIPT, ROOT / "examples" / "publish.py"),
        cwd=installed.home,
        env=installed.env,
    )

    assert EMBEDDED in out  # on the nats-server binary of the venv's embedded extra
    published = published_in(out)
    assert [event_id for event_id, _ in published] == [1, 2, 3]
    assert DUPLICATE.findall(out) == [(published[0][1], "1")]
    origin = Path(out.rstrip().splitlines()[-1].removeprefix("windshift imported from "))
    assert origin.is_relative_to(installed.venv), origin
    assert not origin.is_relative_to(ROOT), origin
