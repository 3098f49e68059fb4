"""Hostile recipes, elements and seeds, run with the real CLI: each is refused before any
work with a message that says what, where and how to fix it; no traceback; nothing
left behind (mounts, loop devices, processes, files in the output or work folders).

The cases are in hostile_corpus.py; add one there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.hostile_corpus import CASES, FIFO, Big, Case, Link

pytestmark = pytest.mark.integration

TIMEOUT = 60  # seconds: every case is refused during validation, long before this


def materialise(case: Case, root: Path) -> Path:
    """The case's files under root/case (links last, so files can be written first)."""
    folder = root / "case"
    folder.mkdir()
    ordered = sorted(case.files.items(), key=lambda item: isinstance(item[1], Link))
    for relative, content in ordered:
        path = Path(os.path.normpath(folder / relative))
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            path.symlink_to(content.target)
        elif content is FIFO:
            os.mkfifo(path)
        elif isinstance(content, Big):
            with path.open("wb") as handle:
                block = content.fill * (1 << 20)
                left = content.size
                while left > 0:
                    handle.write(block[: min(left, len(block))])
                    left -= len(block)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(str(content))
    return folder


def loop_devices() -> str:
    result = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False)
    return result.stdout


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that name `text` (a case's unique folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def files_under(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run_osbake(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_cleanly(case: Case, tmp_path: Path) -> None:
    folder = materialise(case, tmp_path)
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    env = {**os.environ, "OSBAKE_CACHE_DIR": str(cache), "OSBAKE_ELEMENTS_PATH": ""}
    argv = [a.replace("{dir}", str(folder)).replace("{out}", str(out)) for a in case.argv]
    mounts, loops = Path("/proc/self/mountinfo").read_text(), loop_devices()

    result = run_osbake(argv, env)

    err = result.stderr
    assert result.returncode == case.code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.startswith("error: "), err
    assert case.what in err, f"expected {case.what!r} in:\n{err}"
    assert case.where in err, f"expected {case.where!r} (where) in:\n{err}"
    assert "\n  hint: " in err, f"no hint in:\n{err}"
    assert case.hint in err.split("\n  hint: ", 1)[1], err
    # Values are shown escaped: nothing reaches the terminal as a control sequence.
    assert all(c == "\n" or c.isprintable() for c in err), repr(err)
    assert result.stdout == ""
    # Nothing left behind.
    assert Path("/proc/self/mountinfo").read_text() == mounts
    assert loop_devices() == loops
    assert processes_mentioning(str(tmp_path)) == []
    assert files_under(out) == []
    assert files_under(cache / "work") == []
    assert files_under(cache / "store") == []


def test_the_corpus_is_large_and_covers_each_kind() -> None:
    kinds = {case.id.split("/")[0] for case in CASES}
    assert {"recipe", "element", "seed", "cli"} <= kinds
    assert len(CASES) >= 80
    assert len({case.id for case in CASES}) == len(CASES)


# -- the loader's bounds, with the real CLI -------------------------------------------------


def test_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    from tests.integration.hostile_corpus import LAUGHS

    recipe = tmp_path / "lol.yaml"
    recipe.write_text(LAUGHS)
    started = time.monotonic()
    result = run_osbake(["validate", str(recipe)], dict(os.environ))
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert "expands to more than 250,000 values" in result.stderr
    # The bound ("in under a second") for the refusal itself, given generous
    # room for starting Python on a loaded machine.
    assert elapsed < 10, elapsed


def test_a_recipe_with_40000_packages_loads(tmp_path: Path) -> None:
    recipe = tmp_path / "big.yaml"
    recipe.write_text(
        "name: big\npackages:\n" + "".join(f"  - package-{i}\n" for i in range(40_000))
    )
    result = run_osbake(["validate", str(recipe)], dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "valid ((base)/amd64)" in result.stdout


def test_a_10_mib_recipe_is_refused_by_size(tmp_path: Path) -> None:
    recipe = tmp_path / "huge.yaml"
    recipe.write_text("name: huge\npackages:\n" + "  - package-name\n" * (10 * 1024 * 1024 // 17))
    result = run_osbake(["validate", str(recipe)], dict(os.environ))
    assert result.returncode == 2
    assert "larger than the limit of 4 MiB for recipe files" in result.stderr
    assert "Traceback" not in result.stderr


# -- unexpected errors and closed pipes -----------------------------------------------------


BOOM = (
    "import sys, osbake.cli as cli\n"
    "def boom(args):\n"
    "    raise RuntimeError('something osbake did not expect')\n"
    "cli.cmd_schema = boom\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def test_an_unexpected_error_is_exit_70_with_a_hint_and_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BOOM, "schema"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 70
    assert result.stderr.startswith("error: osbake failed unexpectedly: RuntimeError")
    assert "something osbake did not expect" in result.stderr
    assert "hint: " in result.stderr and "-v" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_traceback_of_an_unexpected_error_shows_with_v() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BOOM, "-v", "schema"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 70
    assert "Traceback" in result.stderr and "RuntimeError" in result.stderr
    assert "error: osbake failed unexpectedly" in result.stderr


def closed_pipe_run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run osbake with a standard output whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "osbake", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env=env,
        )
    finally:
        os.close(write)
    return process.returncode, process.stderr


@pytest.fixture
def offline_recipe(tmp_path: Path) -> Path:
    """A recipe whose mirror is a folder (plan reads its release file, no network)."""
    mirror = tmp_path / "mirror"
    (mirror / "dists" / "bookworm").mkdir(parents=True)
    (mirror / "dists" / "bookworm" / "InRelease").write_text("Date: Sat, 01 Jun 2024\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: r\nmirror: file://{mirror}\npackages: [curl]\n"
        "options:\n  debian: {updates: false, security: false}\n"
    )
    return recipe


@pytest.fixture
def cache_with_entries(tmp_path: Path) -> Path:
    from osbake.cache import Store

    cache = tmp_path / "cache"
    store = Store(cache / "store")
    for n in range(3):
        store.begin(f"{n:064x}", "bootstrap").commit({})
    return cache


@pytest.mark.parametrize("command", ["schema", "plan", "cache", "elements"])
def test_a_closed_standard_output_ends_the_command_quietly(
    command: str, offline_recipe: Path, cache_with_entries: Path
) -> None:
    argv = {
        "schema": ["schema"],
        "plan": ["plan", str(offline_recipe)],
        "cache": ["cache", "ls"],
        "elements": ["elements", "list"],
    }[command]
    env = {**os.environ, "OSBAKE_CACHE_DIR": str(cache_with_entries)}
    code, err = closed_pipe_run(argv, env)
    assert err == ""
    assert code == 1


@pytest.mark.parametrize(
    "command",
    ["osbake schema", "osbake cache ls", "osbake plan {recipe}", "osbake elements list"],
)
def test_piped_into_head(command: str, offline_recipe: Path, cache_with_entries: Path) -> None:
    """As people run it: the first line, nothing on standard error."""
    line = command.replace("osbake", f"{sys.executable} -m osbake").format(recipe=offline_recipe)
    result = subprocess.run(
        ["sh", "-c", f"{line} | head -1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "OSBAKE_CACHE_DIR": str(cache_with_entries)},
    )
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr == ""
