"""The console with real processes: `osbake serve`, workers, SQLite or PostgreSQL + Redis.

Builds use a stand-in for `osbake build --json` (service_fake_build.py) that speaks
the same protocol in a second; the real builds are in tests/e2e/test_console_*.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.service_support import (
    RunningConsole,
    add_configuration,
    backend,
    fake_commands,
    start_build,
    start_worker,
    stop_group,
    wait_for,
)

pytestmark = pytest.mark.integration

HEARTBEAT_TIMEOUT = 8


class Farm:
    """A console and its worker (embedded for SQLite, `osbake worker` for PostgreSQL + Redis)."""

    def __init__(self, kind: str, root: Path, args: list[str]) -> None:
        self.kind = kind
        self.embedded = kind == "sqlite"
        self.console = RunningConsole(
            root / "data",
            args=[
                *args,
                "--keep",
                "2",
                "--heartbeat-timeout",
                str(HEARTBEAT_TIMEOUT),
                *([] if self.embedded else ["--workers", "0"]),
            ],
            env=fake_commands(),
        )
        self.worker: subprocess.Popen[Any] | None = None
        if not self.embedded:
            self.worker = start_worker(self.console, env=fake_commands())

    def worker_pid(self) -> int:
        if self.worker is not None:
            return self.worker.pid
        children: list[int] = []
        for task in Path(f"/proc/{self.console.proc.pid}/task").iterdir():
            children += [int(p) for p in (task / "children").read_text().split()]
        assert len(children) == 1, children
        return children[0]

    def kill_worker(self) -> None:
        os.kill(self.worker_pid(), signal.SIGKILL)
        if self.worker is not None:
            self.worker.wait()
            self.worker = start_worker(self.console, env=fake_commands())

    def stop(self) -> None:
        if self.worker is not None:
            stop_group(self.worker)
        self.console.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres+redis"])
def farm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    with backend(request.param) as args:
        running = Farm(
            request.param, tmp_path_factory.mktemp(request.param.replace("+", "-")), args
        )
        try:
            yield running
        finally:
            running.stop()


def configure(client: httpx.Client, name: str, fake: str, **recipe: str) -> None:
    text = f'name: {name}\ndescription: "{fake}"\noutputs: [tar]\n' + "".join(
        f"{k}: {v}\n" for k, v in recipe.items()
    )
    add_configuration(client, name, text)


def test_a_build_through_the_api_with_a_token(farm: Farm) -> None:
    console = farm.console
    viewer = console.make_token("viewer", "looker")
    with console.api() as api, console.api("") as anonymous, console.api(viewer) as looker:
        configure(api, "api-flow", "sleep=0.5")
        assert anonymous.post("/api/builds", json={"configuration": "api-flow"}).status_code == 401
        assert looker.post("/api/builds", json={"configuration": "api-flow"}).status_code == 403
        build_id = start_build(api, "api-flow", milestone="alpha")
        events = []
        with api.stream("GET", f"/api/builds/{build_id}/events") as stream:
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "build":
                    events.append(line[6:])
                if kind == "end":
                    break
        assert any('"event": "finish"' in e for e in events)
        assert any("packages: working" in e for e in events)
        build = console.wait_state(build_id, {"succeeded", "failed"}, 60)
        assert build["state"] == "succeeded", build["reason"]
        assert build["boot_test"]["state"] == "none"
        (artifact,) = build["artifacts"]
        data = looker.get(artifact["url"]).content
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        part = looker.get(artifact["url"], headers={"Range": f"bytes=100-{len(data) - 1}"})
        assert part.status_code == 206
        assert part.content == data[100:]
        assert looker.get(f"/api/builds/{build_id}/manifest").json()["image"] == "api-flow"


def test_two_builds_of_a_configuration_are_compared(farm: Farm) -> None:
    console = farm.console
    viewer = console.make_token("viewer", "comparer")
    with console.api() as api, console.api(viewer) as looker:
        configure(api, "diff-flow", "sleep=0.1 pkgversion=1.0")
        old = start_build(api, "diff-flow")
        assert console.wait_state(old, {"succeeded", "failed"}, 60)["state"] == "succeeded"
        configure(api, "diff-flow", "sleep=0.1 pkgversion=1.2")  # version 2
        new = start_build(api, "diff-flow")
        assert console.wait_state(new, {"succeeded", "failed"}, 60)["state"] == "succeeded"
        reply = looker.get(f"/api/builds/{old}/diff/{new}")
        assert reply.status_code == 200, reply.text
        result = reply.json()
        assert result["old"] == f"build {old} (diff-flow v1 (base)/amd64)"
        assert result["new"] == f"build {new} (diff-flow v2 (base)/amd64)"
        assert result["packages"]["changed"] == [
            {"name": "fakepkg", "old": "1.0", "new": "1.2", "change": "upgraded"}
        ]
        assert result["packages"]["added"] == result["packages"]["removed"] == []
        assert result["recipe_keys"] == ["description"]
        missing = looker.get(f"/api/builds/{old}/diff/{new + 1000}")
        assert missing.status_code == 404
        assert missing.json()["error"] == f"there is no build {new + 1000}"
    # the newer build's page links to the comparison with the previous one, shown as text
    browser = console.browser_login()
    try:
        page = browser.get(f"/builds/{new}").text
        assert f'id="compare-link" href="/builds/{old}/diff/{new}"' in page
        shown = browser.get(f"/builds/{old}/diff/{new}").text
        assert "~ fakepkg 1.0 -&gt; 1.2" in shown
    finally:
        browser.close()


def test_a_failed_build_names_its_step(farm: Farm) -> None:
    with farm.console.api() as api:
        configure(api, "breaks", "fail=packages")
        build = farm.console.wait_state(start_build(api, "breaks"), {"succeeded", "failed"}, 60)
        assert build["state"] == "failed"
        assert build["failed_step"] == "packages"
        assert "step 'packages' failed" in build["reason"]
        tail = api.get(f"/api/builds/{build['id']}").json()["log_tail"]
        assert any("something broke" in line for line in tail)


def test_a_running_build_is_cancelled(farm: Farm) -> None:
    with farm.console.api() as api:
        configure(api, "slow", "sleep=60")
        build_id = start_build(api, "slow")
        farm.console.wait_state(build_id, {"running"}, 30)
        assert api.post(f"/api/builds/{build_id}/cancel").status_code == 200
        build = farm.console.wait_state(build_id, {"cancelled", "failed", "succeeded"}, 40)
        assert build["state"] == "cancelled"
        assert build["reason"].startswith("cancelled during step")


def test_a_schedule_fires_a_build(farm: Farm) -> None:
    with farm.console.api() as api:
        configure(api, "nightly", "sleep=0.1")
        # a sixth field is seconds: every 3 s, so that the test need not wait for a minute
        schedule = api.post(
            "/api/configurations/nightly/schedules",
            json={"cron": "* * * * * */3", "milestone": "daily"},
        ).json()
        assert schedule["next_run"]

        def fired() -> list[dict[str, Any]]:
            return [
                b
                for b in api.get("/api/builds?configuration=nightly").json()
                if b["schedule_id"] == schedule["id"]
            ]

        (build, *_) = wait_for(fired, 30, "the schedule to fire")
        assert api.delete(f"/api/schedules/{schedule['id']}").status_code == 204
        assert (
            farm.console.wait_state(build["id"], {"succeeded", "failed"}, 60)["state"]
            == "succeeded"
        )


def test_a_worker_killed_mid_build_fails_the_build_in_bounded_time(farm: Farm) -> None:
    with farm.console.api() as api:
        configure(api, "doomed", "sleep=120")
        build_id = start_build(api, "doomed")
        wait_for(lambda: api.get(f"/api/builds/{build_id}").json()["current_step"], 30, "a step")
        farm.kill_worker()
        build = farm.console.wait_state(
            build_id, {"failed", "succeeded", "cancelled"}, HEARTBEAT_TIMEOUT + 20
        )
        assert build["state"] == "failed"
        assert "stopped reporting" in build["reason"]
        assert build["failed_step"]
        assert api.get("/api/status").status_code == 200  # the console keeps serving
        # the next build runs (the embedded worker is restarted; the farm starts a new one)
        configure(api, "after", "sleep=0.1")
        after = farm.console.wait_state(start_build(api, "after"), {"succeeded", "failed"}, 60)
        assert after["state"] == "succeeded"


def test_retention_keeps_n_and_the_blessed_and_frees_the_rest(farm: Farm) -> None:
    artifacts = farm.console.data / "artifacts"
    with farm.console.api() as api:
        configure(api, "kept", "sleep=0.1 disk")
        ids = []
        for _ in range(4):
            build = farm.console.wait_state(
                start_build(api, "kept", milestone="beta"), {"succeeded", "failed"}, 60
            )
            assert build["state"] == "succeeded", build["reason"]
            assert build["boot_test"]["state"] == "passed"  # a disk image: the boot command ran
            ids.append(build["id"])
            if len(ids) == 1:
                assert api.post(f"/api/builds/{build['id']}/bless").json()["blessed"]
        # keep 2 per configuration and channel, plus the blessed first one
        wait_for(lambda: not (artifacts / str(ids[1])).exists(), 20, "retention to collect")
        assert (artifacts / str(ids[0])).is_dir()
        assert (artifacts / str(ids[2])).is_dir()
        assert (artifacts / str(ids[3])).is_dir()
        assert api.get(f"/api/builds/{ids[1]}").json()["purged"]
        disk = api.get("/api/disk").json()
        assert disk["by_configuration"]["kept"] == sum(
            p.stat().st_size
            for i in (ids[0], ids[2], ids[3])
            for p in (artifacts / str(i)).iterdir()
        )


def test_the_boot_test_boots_with_the_configurations_datasource(farm: Farm) -> None:
    with farm.console.api() as api:
        configure(api, "cloudy", "sleep=0.1 disk")
        default = farm.console.wait_state(start_build(api, "cloudy"), {"succeeded", "failed"}, 60)
        assert default["boot_test"]["state"] == "passed", default
        assert (default["boot_test"]["datasource"], default["boot_test"]["hardware"]) == (
            "none",
            "kvm",
        )
        log = api.get(f"/api/builds/{default['id']}/log").text
        assert "boot options: --expect login:" in log  # the command as it always was

        refused = api.put("/api/configurations/cloudy/boot-test", json={"datasource": "azure"})
        assert refused.status_code == 422
        assert refused.json()["location"] == "key 'body.datasource'"
        reply = api.put(
            "/api/configurations/cloudy/boot-test",
            json={"datasource": "ec2", "hardware": "target"},
        )
        assert reply.status_code == 200, reply.text
        assert api.get("/api/configurations/cloudy").json()["boot_test"] == {
            "datasource": "ec2",
            "hardware": "target",
        }
        build = farm.console.wait_state(start_build(api, "cloudy"), {"succeeded", "failed"}, 60)
        assert build["state"] == "succeeded", build["reason"]
        boot = build["boot_test"]
        assert (boot["state"], boot["datasource"], boot["hardware"]) == ("passed", "ec2", "target")
        assert boot["detail"].endswith("booted with bios (datasource ec2, hardware target)")
        log = api.get(f"/api/builds/{build['id']}/log").text
        assert (
            "boot options: --datasource ec2 --timeout 600 --hardware target "
            "--expect Cloud-init v\\. \\S+ finished at .* Datasource DataSourceEc2" in log
        )
    browser = farm.console.browser_login()
    try:
        page = browser.get(f"/builds/{build['id']}").text
        assert '<span id="boot-datasource">ec2</span>' in page
        page = browser.get("/configurations/cloudy").text
        assert '<strong id="boot-datasource">ec2</strong>' in page
    finally:
        browser.close()
