"""A recipe stored in the console cannot reach the console's data: builds run without root.

The console (`osbake serve` as root, SQLite, its embedded worker) runs real
builds of two hostile configurations as its build user (osbake-build, rootless):

- a `run:` line that reads the data folder, then opens the secret key by its
  file handle (open_by_handle_at, the "shocker" escape: a file handle names an
  inode of the whole file system, whatever the sandbox's mounts; what root
  with root's rights can do: the control test shows it reading the key as
  root);
- an element of the configuration whose host-side `root` phase script reads the
  secret key and the database directly.

Both builds fail, their logs show the attempt and the refusal, and the secret
appears in no log and no artifact.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.service_support import (
    RunningConsole,
    add_configuration,
    build_runtime,
    start_build,
)

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

BASE = """distro: debian
release: bookworm
arch: [amd64]
packages: [python3]
outputs: [tar]
"""
# Open an inode by its handle (ext4: inode number and a generation of 0, which the
# kernel does not check) through every mount the sandbox shows, and keep what it holds.
SHOCKER = """import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
handle = ctypes.create_string_buffer(struct.pack("IiII", 8, 1, int(sys.argv[1]), 0))
errors = set()
for line in open("/proc/self/mounts"):
    try:
        mount = os.open(line.split()[1], os.O_RDONLY)
    except OSError:
        continue
    fd = libc.open_by_handle_at(mount, handle, os.O_RDONLY)
    if fd >= 0:
        open(sys.argv[2], "wb").write(os.read(fd, 4096))
        print("ATTACK-DONE")
        break
    errors.add(os.strerror(ctypes.get_errno()))
else:
    sys.exit("open_by_handle_at: " + ", ".join(sorted(errors)))
"""


def steal_by_run_line(data: Path) -> dict[str, str]:
    """The configuration's files: a recipe whose run: line steals the key."""
    inode = os.stat(data / "secret_key").st_ino
    command = (
        f"echo ATTACK-START; cat {data}/secret_key || echo ATTACK-DIRECT-REFUSED; "
        f"python3 /usr/local/bin/steal.py {inode} /etc/stolen-key"
    )
    recipe = (
        f"name: steal-by-run\n{BASE}"
        'files: [{src: steal.py, dest: /usr/local/bin/steal.py, mode: "0755"}]\n'
        f"run:\n  - {json.dumps(command)}\n"
    )
    return {"recipe.yaml": recipe, "steal.py": SHOCKER}


def steal_by_element(data: Path) -> dict[str, str]:
    return {
        "recipe.yaml": f"name: steal-by-element\n{BASE}elements: [steal]\n",
        "elements/steal/element.yaml": "description: reads the console's data on the host\n",
        "elements/steal/root/10-steal": (
            "#!/bin/sh\nset -e\necho ATTACK-HOST-START\n"
            f'cat {data}/secret_key > "$OSBAKE_WORK_DIR/stolen"\n'
            f'cat {data}/osbake.db > "$OSBAKE_WORK_DIR/stolen.db"\n'
            "echo ATTACK-HOST-DONE\n"
        ),
    }


@pytest.fixture(scope="module")
def data_parent() -> Iterator[Path]:
    """On the disk of / (not a tmpfs), so that the device attack has something to read."""
    folder = Path(tempfile.mkdtemp(prefix="osbake-console-data-", dir="/var/tmp"))
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.fixture(scope="module")
def console(data_parent: Path) -> Iterator[RunningConsole]:
    if os.geteuid() != 0:
        pytest.skip("the console makes its build user as root (CI runs as root)")
    running = RunningConsole(data_parent / "data", env=build_runtime())
    try:
        yield running
    finally:
        running.stop()


def secret_nowhere(console: RunningConsole, build_id: int, log: str) -> None:
    secret = (console.data / "secret_key").read_text().strip()
    assert secret not in log
    artifacts = console.data / "artifacts" / str(build_id)
    for path in artifacts.rglob("*") if artifacts.exists() else []:
        assert secret.encode() not in path.read_bytes()


def test_a_run_line_cannot_read_the_consoles_data(console: RunningConsole) -> None:
    with console.api() as api:
        files = steal_by_run_line(console.data)
        add_configuration(api, "steal-by-run", files=files)
        build_id = start_build(api, "steal-by-run")
        build = console.wait_state(build_id, {"succeeded", "failed", "cancelled"}, 1500)
        log = api.get(f"/api/builds/{build_id}/log").text
        assert build["state"] == "failed", log[-3000:]
        assert "ATTACK-START" in log  # the line ran ...
        assert "ATTACK-DIRECT-REFUSED" in log  # ... could not read the folder ...
        assert "open_by_handle_at: Operation not permitted" in log  # ... nor open it by handle
        assert "ATTACK-DONE" not in log
        assert build["artifacts"] == []
        manifest = build.get("manifest")
        assert manifest is None
        secret_nowhere(console, build_id, log)


def test_an_element_script_cannot_read_the_consoles_data(console: RunningConsole) -> None:
    with console.api() as api:
        add_configuration(
            api,
            "steal-by-element",
            files=steal_by_element(console.data),
            executable=["elements/steal/root/10-steal"],
        )
        build_id = start_build(api, "steal-by-element")
        build = console.wait_state(build_id, {"succeeded", "failed", "cancelled"}, 1500)
        log = api.get(f"/api/builds/{build_id}/log").text
        assert build["state"] == "failed", log[-3000:]
        assert "ATTACK-HOST-START" in log
        assert "Permission denied" in log
        assert "ATTACK-HOST-DONE" not in log
        secret_nowhere(console, build_id, log)


def test_control_the_attack_reads_the_key_with_roots_rights(
    console: RunningConsole, tmp_path: Path
) -> None:
    """The same attack, run with root's rights: it works, so the refusals above are real."""
    script = tmp_path / "steal.py"
    script.write_text(steal_by_run_line(console.data)["steal.py"])
    inode = os.stat(console.data / "secret_key").st_ino
    stolen = tmp_path / "stolen"
    subprocess.run(
        ["/usr/bin/python3", str(script), str(inode), str(stolen)], check=True, cwd=tmp_path
    )
    assert stolen.read_text() == (console.data / "secret_key").read_text()
