"""From schedule to the clouds, with a real build: the console builds a cloud image on a
schedule, boots it, publishes it when it is blessed, and the reference client and
`osbake sync` take it from the console's URL into a real Glance.

The recipe is examples/debian-cloud.yaml reduced to one output (qcow2) and one
firmware (bios), so that the boot test boots once.

A second test (`slow`: cloud-init's stages add about 2.5 minutes to the boot under
TCG) builds the same recipe for a configuration whose boot test uses the ec2
datasource: the worker's `osbake boot` serves an EC2 metadata service to the guest,
and the boot passes when cloud-init finished with DataSourceEc2.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.service_support import (
    RunningConsole,
    add_configuration,
    build_runtime,
    start_build,
    wait_for,
)

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
RECIPE = """\
name: cloud-release
description: Debian 12 cloud image, published by the console
distro: debian
release: bookworm
arch: [amd64]
kernel: cloud
boot: [bios]
elements: [vm, cloud-init, growroot, openssh-server, lean]
outputs: [qcow2]
"""


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    running = RunningConsole(
        tmp_path_factory.mktemp("release") / "data", env=build_runtime()
    )  # builds run as osbake-build
    try:
        yield running
    finally:
        running.stop()


def test_a_scheduled_build_is_booted_blessed_published_and_synced_into_glance(
    console: RunningConsole, glance: Path, tmp_path: Path
) -> None:
    url = console.url
    with console.api() as api:
        add_configuration(api, "cloud-release", RECIPE)
        # a schedule that is due once, a few seconds from now (the sixth field: seconds)
        due = datetime.now(UTC) + timedelta(seconds=4)
        reply = api.post(
            "/api/configurations/cloud-release/schedules",
            json={"cron": f"{due.minute} {due.hour} * * * {due.second}", "milestone": "rc"},
        )
        assert reply.status_code == 201, reply.text
        schedule = reply.json()["id"]

        def fired() -> int | None:
            found = api.get("/api/builds").json()
            ids = [b["id"] for b in found if b["configuration"] == "cloud-release"]
            return min(ids) if ids else None

        build_id = wait_for(fired, 60, "the schedule to fire")
        build = console.wait_state(build_id, {"succeeded", "failed", "cancelled"}, 1200)
        assert build["state"] == "succeeded", (
            f"{build['reason']}\n{api.get(f'/api/builds/{build_id}').json().get('log_tail')}"
        )
        assert (build["schedule_id"], build["requested_by"]) == (schedule, f"schedule {schedule}")
        boot = build["boot_test"]
        assert (boot["state"], boot["datasource"], boot["hardware"]) == ("passed", "none", "kvm")
        reply = api.post(f"/api/builds/{build_id}/bless")
        assert reply.status_code == 200, reply.text

        def published() -> bool:
            jobs = api.get(f"/api/builds/{build_id}").json()["release"]["jobs"]
            states = [j["state"] for j in jobs if j["kind"] == "publish"]
            assert "failed" not in states, [api.get(j["log"]).text for j in jobs]
            return states == ["succeeded"]

        wait_for(published, 300, "the blessed build to be published", every=0.5)
        disk = next(a for a in build["artifacts"] if a["format"] == "qcow2")

    # The reference client, with the console's public keyring, anonymously.
    keyring = tmp_path / "console.gpg"
    keyring.write_bytes(
        subprocess.run(
            ["curl", "-sf", f"{url}/keyring.gpg"], capture_output=True, check=True
        ).stdout
    )
    query = subprocess.run(
        [
            str(BIN / "sstream-query"),
            "--keyring",
            str(keyring),
            f"{url}/streams/v1/index.sjson",
            "recipe=cloud-release",
            "--output-format",
            "%(ftype)s %(label)s %(sha256)s %(path)s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert query.returncode == 0, query.stderr
    lines = [line.split() for line in query.stdout.splitlines() if line.startswith("disk1.img")]
    assert [(f, label, sha) for f, label, sha, _ in lines] == [("disk1.img", "rc", disk["sha256"])]

    # `osbake sync` from the console's URL into Glance; the second run uploads nothing.
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(glance)}
    argv = [
        *(sys.executable, "-m", "osbake", "sync", url, "glance:testglance"),
        *("--keyring", str(keyring), "recipe=cloud-release"),
    ]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert "1 items selected, 1 transferred" in first.stdout
    second = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stderr
    assert "1 items selected, 0 transferred" in second.stdout

    import openstack

    os.environ["OS_CLIENT_CONFIG_FILE"] = str(glance)
    try:
        images = [
            i
            for i in openstack.connect(cloud="testglance").image.images()
            if i.properties.get("source_sha256") == disk["sha256"]
        ]
    finally:
        del os.environ["OS_CLIENT_CONFIG_FILE"]
    assert [(i.status, i.disk_format) for i in images] == [("active", "qcow2")]
    whole = subprocess.run(
        ["curl", "-sf", f"{url}/{lines[0][3]}"], capture_output=True, check=True
    ).stdout
    assert hashlib.sha256(whole).hexdigest() == disk["sha256"]


@pytest.mark.slow
def test_the_boot_test_gives_the_image_the_configurations_datasource(
    console: RunningConsole,
) -> None:
    with console.api() as api:
        add_configuration(api, "cloud-ec2", RECIPE, boot_test={"datasource": "ec2"})
        build_id = start_build(api, "cloud-ec2")
        build = console.wait_state(build_id, {"succeeded", "failed", "cancelled"}, 1500)
        assert build["state"] == "succeeded", (
            f"{build['reason']}\n{api.get(f'/api/builds/{build_id}').json().get('log_tail')}"
        )
        boot = build["boot_test"]
        assert (boot["state"], boot["datasource"], boot["hardware"]) == ("passed", "ec2", "kvm"), (
            boot
        )
        assert boot["detail"] == (
            "cloud-release.qcow2 booted with bios (datasource ec2, hardware kvm)"
        ), boot
        log = api.get(f"/api/builds/{build_id}/log").text
        # `osbake boot` saw the console line it waited for
        assert re.search(r"booted: 'Cloud-init .* Datasource DataSourceEc2' after", log), log
        seconds = next(s["seconds"] for s in build["steps"] if s["name"].startswith("boot test"))
        print(f"boot test with the ec2 datasource: {seconds:.0f} s")
    browser = console.browser_login()
    try:
        page = browser.get(f"/builds/{build_id}").text
        assert '<span id="boot-datasource">ec2</span>' in page
    finally:
        browser.close()
