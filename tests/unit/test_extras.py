"""osbake without its extras: the core CLI works, the console and cloud targets say what is missing.

Each test runs osbake in a fresh interpreter whose imports of the extras' packages
fail, as they do where only `pip install osbake` was run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from osbake.errors import HostError
from osbake.extras import Extra, MissingExtra, needs

# The top-level modules of osbake[console] and osbake[publish] (requirements/service.txt,
# requirements/publish.txt) and what they pull in.
BLOCKED = (
    "fastapi",
    "fastapi_offline",
    "starlette",
    "uvicorn",
    "jinja2",
    "multipart",
    "python_multipart",
    "itsdangerous",
    "sqlalchemy",
    "alembic",
    "huey",
    "redis",
    "psycopg",
    "croniter",
    "httpx",
    "boto3",
    "botocore",
    "openstack",
)

WITHOUT_EXTRAS = """
import importlib.abc, sys

BLOCKED = set(sys.argv[1].split(","))


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Refuse())
for name in list(sys.modules):  # nothing of them may be loaded already
    assert name.partition(".")[0] not in BLOCKED, name
"""

IMPORT_ALL = """
import importlib, pkgutil
import osbake

skipped = ("osbake.service", "osbake.__main__")
names = [
    m.name
    for m in pkgutil.walk_packages(osbake.__path__, "osbake.")
    if not m.name.startswith(skipped)
]
for name in names:
    importlib.import_module(name)
print(len(names), "modules")
"""

RUN_CLI = """
from osbake.cli import main

sys.exit(main(sys.argv[2:]))
"""


def without_extras(
    script: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS + script, ",".join(BLOCKED), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.real_subprocess
def test_every_module_outside_the_service_imports_without_the_extras() -> None:
    result = without_extras(IMPORT_ALL)
    assert result.returncode == 0, result.stderr
    count = int(result.stdout.split()[0])
    assert count > 50  # the walk found osbake's modules (build, plan, vm, publish, ...)


@pytest.mark.real_subprocess
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["build", "--help"],
        ["boot", "--help"],
        ["inspect", "--help"],
        ["seed", "--help"],
        ["plan", "--help"],
        ["sync", "--help"],
        ["serve", "--help"],
    ],
)
def test_the_cli_runs_without_the_extras(argv: list[str]) -> None:
    result = without_extras(RUN_CLI, *argv)
    assert result.returncode == 0, result.stderr
    assert "usage: osbake" in result.stdout


@pytest.mark.real_subprocess
def test_a_recipe_is_checked_without_the_extras(tmp_path: Path) -> None:
    recipe = Path(__file__).resolve().parents[2] / "examples" / "debian-cloud.yaml"
    result = without_extras(RUN_CLI, "validate", str(recipe), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid (" in result.stdout


@pytest.mark.real_subprocess
@pytest.mark.parametrize(
    ("argv", "extra", "module"),
    [
        (["serve", "--data", "{tmp}/data"], "console", "uvicorn"),
        (["worker", "--server", "http://127.0.0.1:9", "--token", "t"], "console", "huey"),
        (["sync", "{tmp}/streams", "glance:"], "publish", "openstack"),
        (["sync", "{tmp}/streams", "ec2:eu-west-1"], "publish", "boto3"),
    ],
)
def test_a_command_without_its_extra_says_what_to_install(
    tmp_path: Path, argv: list[str], extra: str, module: str
) -> None:
    (tmp_path / "streams").mkdir()
    result = without_extras(RUN_CLI, *(a.format(tmp=tmp_path) for a in argv))
    assert result.returncode == HostError.exit_code, result.stderr
    assert f"pip install 'osbake[{extra}]'" in result.stderr
    assert f"'{module}'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # refused before doing anything


def test_needs_names_the_missing_module_and_the_extra() -> None:
    with pytest.raises(MissingExtra) as caught, needs(Extra.CONSOLE, "osbake serve"):
        raise ModuleNotFoundError("No module named 'fastapi.routing'", name="fastapi.routing")
    assert caught.value.message.startswith("osbake serve needs the Python module 'fastapi'")
    assert caught.value.hint == "install it: pip install 'osbake[console]'"
    assert caught.value.exit_code == 3


def test_needs_checks_modules_loaded_later() -> None:
    with (
        pytest.raises(MissingExtra, match="'no_such_driver_module'"),
        needs(Extra.CONSOLE, "osbake worker", "json", "no_such_driver_module"),
    ):
        pass
    with needs(Extra.CONSOLE, "osbake worker", "json"):
        pass


def test_a_missing_osbake_module_is_a_defect_not_a_missing_extra() -> None:
    with pytest.raises(ModuleNotFoundError), needs(Extra.PUBLISH, "x"):
        raise ModuleNotFoundError("No module named 'osbake.nothing'", name="osbake.nothing")
    with pytest.raises(ModuleNotFoundError), needs(Extra.PUBLISH, "x"):
        raise ModuleNotFoundError("no name")
