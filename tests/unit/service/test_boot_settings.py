"""A configuration's boot-test settings: checked where they enter (API, web form), kept
in the database (also across the migration), taken by each build when it is requested,
and turned into `osbake boot` options by the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text

from osbake import run as runner
from osbake.events import Events
from osbake.service import db
from osbake.service.models import Base
from osbake.service.worker import Outputs, WorkerSettings, boot_test
from tests.unit.service.service_harness import Harness
from tests.unit.service.test_web import csrf, login

DEFAULTS = {"datasource": "none", "hardware": "kvm"}
LONGER = ["--timeout", "600"]  # cloud-init done comes later than the login prompt


def put(harness: Harness, body: Any, role: str = "builder", name: str = "demo") -> Any:
    return harness.call("PUT", f"/api/configurations/{name}/boot-test", role, json=body)


def test_a_configuration_boots_as_today_until_told_otherwise(harness: Harness) -> None:
    harness.configuration()
    assert harness.call("GET", "/api/configurations/demo", "viewer").json()["boot_test"] == DEFAULTS
    build = harness.build()
    assert build["boot_test"] == {"state": "pending", "detail": "", **DEFAULTS}
    claim = harness.call(
        "POST", f"/api/worker/builds/{build['id']}/claim", "worker", json={"worker": "w"}
    )
    assert claim.json()["boot"] == DEFAULTS


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"datasource": "azure"}, "body.datasource"),
        ({"datasource": "EC2"}, "body.datasource"),
        ({"datasource": 5}, "body.datasource"),
        ({"datasource": ["ec2"]}, "body.datasource"),
        ({"hardware": "xen"}, "body.hardware"),
        ({"hardware": "kvm\n--accel"}, "body.hardware"),
        ({"hardware": None}, "body.hardware"),
        ({"hardware": "x" * 10_000}, "body.hardware"),
        ({"datasource": "ec2", "nic": "e1000"}, "body.nic"),  # only the known fields
    ],
)
def test_a_bad_setting_is_refused_with_its_field(
    harness: Harness, body: dict[str, Any], field: str
) -> None:
    harness.configuration()
    reply = put(harness, body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["location"] == f"key '{field}'"
    assert harness.call("GET", "/api/configurations/demo", "viewer").json()["boot_test"] == DEFAULTS


def test_only_builders_change_it_and_only_of_a_configuration_that_exists(
    harness: Harness,
) -> None:
    harness.configuration()
    assert put(harness, {"datasource": "ec2"}, role="viewer").status_code == 403
    assert put(harness, {"datasource": "ec2"}, name="nothere").status_code == 404
    assert harness.call("GET", "/api/configurations/demo", "viewer").json()["boot_test"] == DEFAULTS


def test_builds_take_the_setting_when_they_are_requested(harness: Harness) -> None:
    harness.configuration()
    reply = put(harness, {"datasource": "ec2", "hardware": "target"})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"datasource": "ec2", "hardware": "target"}
    first = harness.build()
    assert put(harness, {"datasource": "openstack"}).json() == {
        "datasource": "openstack",
        "hardware": "kvm",  # a field left out is the default again: PUT sets it all
    }
    second = harness.build()
    for build, want in ((first, ("ec2", "target")), (second, ("openstack", "kvm"))):
        claim = harness.call(
            "POST", f"/api/worker/builds/{build['id']}/claim", "worker", json={"worker": "w"}
        ).json()
        assert (claim["boot"]["datasource"], claim["boot"]["hardware"]) == want
    shown = harness.call("GET", f"/api/builds/{first['id']}", "viewer").json()["boot_test"]
    assert (shown["datasource"], shown["hardware"]) == ("ec2", "target")
    listed = harness.call("GET", "/api/configurations", "viewer").json()
    assert [c["boot_test"] for c in listed] == [{"datasource": "openstack", "hardware": "kvm"}]


def test_a_new_configuration_can_say_it_with_its_files(harness: Harness) -> None:
    from tests.unit.service.service_harness import RECIPE

    body = {
        "name": "cloud",
        "files": {"recipe.yaml": RECIPE},
        "boot_test": {"datasource": "configdrive", "hardware": "vmware"},
    }
    reply = harness.call("POST", "/api/configurations", "builder", json=body)
    assert reply.status_code == 201, reply.text
    got = harness.call("GET", "/api/configurations/cloud", "viewer").json()["boot_test"]
    assert got == {"datasource": "configdrive", "hardware": "vmware"}
    # a new version without the field keeps the setting
    body = {"name": "cloud", "files": {"recipe.yaml": RECIPE + "# v2\n"}}
    assert harness.call("POST", "/api/configurations", "builder", json=body).status_code == 201
    got = harness.call("GET", "/api/configurations/cloud", "viewer").json()["boot_test"]
    assert got == {"datasource": "configdrive", "hardware": "vmware"}
    bad = {**body, "boot_test": {"datasource": "gce"}}
    reply = harness.call("POST", "/api/configurations", "builder", json=bad)
    assert reply.status_code == 422
    assert reply.json()["location"] == "key 'body.boot_test.datasource'"


def test_the_openapi_document_lists_the_names(harness: Harness) -> None:
    schema = harness.client.get("/openapi.json").json()
    route = schema["paths"]["/api/configurations/{name}/boot-test"]["put"]
    assert "422" in route["responses"]
    settings = schema["components"]["schemas"]["BootSettings"]["properties"]
    datasource = schema["components"]["schemas"][settings["datasource"]["$ref"].split("/")[-1]]
    assert datasource["enum"] == ["nocloud", "configdrive", "ec2", "openstack", "none"]
    assert settings["hardware"]["enum"] == ["target", "kvm", "vmware", "hyperv"]
    assert settings["hardware"]["default"] == "kvm"
    request = schema["components"]["schemas"]["ConfigurationRequest"]["properties"]
    assert "boot_test" in request


def test_the_configuration_page_shows_and_changes_it(harness: Harness) -> None:
    harness.configuration()
    token = login(harness)
    page = harness.client.get("/configurations/demo").text
    assert '<strong id="boot-datasource">none</strong>' in page
    assert 'action="/configurations/demo/boot-test"' in page
    assert "<option selected>kvm</option>" in page
    changed = harness.client.post(
        "/configurations/demo/boot-test",
        data={"csrf_token": token, "datasource": "ec2", "hardware": "target"},
        follow_redirects=False,
    )
    assert changed.status_code == 303
    page = harness.client.get("/configurations/demo").text
    assert '<strong id="boot-datasource">ec2</strong>' in page
    assert "<option selected>ec2</option>" in page
    assert "<option selected>target</option>" in page
    refused = harness.client.post(
        "/configurations/demo/boot-test",
        data={"csrf_token": csrf(page), "datasource": "ec2", "hardware": "bochs"},
    )
    assert refused.status_code == 422
    assert "hardware" in refused.text and "give one of target, kvm, vmware, hyperv" in refused.text
    forged = harness.client.post(
        "/configurations/demo/boot-test", data={"datasource": "none", "hardware": "kvm"}
    )
    assert forged.status_code == 403
    got = harness.call("GET", "/api/configurations/demo", "viewer").json()["boot_test"]
    assert got == {"datasource": "ec2", "hardware": "target"}


def test_the_build_page_says_what_it_was_booted_with(harness: Harness) -> None:
    harness.configuration()
    put(harness, {"datasource": "openstack"})
    build = harness.build()
    harness.run_fake(build["id"], disk=True)
    login(harness)
    page = harness.client.get(f"/builds/{build['id']}").text
    assert '<span id="boot-datasource">openstack</span>' in page
    assert '<span id="boot-hardware">kvm</span>' in page


# -- the worker ----------------------------------------------------------------------------


def booted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **boot: str
) -> tuple[list[list[str]], dict[str, Any]]:
    (tmp_path / "disk.qcow2").write_bytes(b"qcow2")
    argvs: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> runner.Completed:
        argvs.append(list(argv))
        return runner.Completed(list(argv), 0)

    monkeypatch.setattr(runner, "run", fake_run)
    settings = WorkerSettings(
        server="http://x", token="t", work_dir=tmp_path, boot_command=["osbake", "boot"]
    )
    manifest = {"artifacts": [{"file": "disk.qcow2", "format": "qcow2"}], "recipe": {}}
    result = boot_test(settings, manifest, Outputs(tmp_path, None), Events(), **boot)
    return argvs, result


def test_the_default_boot_test_runs_the_same_command_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for boot in ({}, DEFAULTS):
        argvs, result = booted(tmp_path, monkeypatch, **boot)
        image = str(tmp_path / "disk.qcow2")
        assert argvs[-1][-7:] == [
            "osbake",
            "boot",
            image,
            "--firmware",
            "bios",
            "--expect",
            "login:",
        ]
        assert result == {"boot_state": "passed", "boot_detail": "disk.qcow2 booted with bios"}


@pytest.mark.parametrize(
    ("datasource", "hardware", "options", "name"),
    [
        ("ec2", "kvm", ["--datasource", "ec2", *LONGER], "Ec2"),
        (
            "openstack",
            "target",
            ["--datasource", "openstack", *LONGER, "--hardware", "target"],
            "OpenStack",
        ),
        (
            "nocloud",
            "vmware",
            ["--datasource", "nocloud", *LONGER, "--hardware", "vmware"],
            "NoCloud",
        ),
        ("none", "hyperv", ["--hardware", "hyperv"], None),
    ],
)
def test_the_worker_boots_with_the_builds_datasource_and_hardware(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    datasource: str,
    hardware: str,
    options: list[str],
    name: str | None,
) -> None:
    argvs, result = booted(tmp_path, monkeypatch, datasource=datasource, hardware=hardware)
    (argv,) = argvs
    after = argv[argv.index("--firmware") + 2 :]
    expect = after[len(options) :]
    assert after[: len(options)] == options
    if name is None:
        assert expect == ["--expect", "login:"]
    else:
        # the boot passes when cloud-init is done with the datasource, not at the prompt
        (flag, pattern) = expect
        assert flag == "--expect"
        import re

        line = (
            f"[  163.4] cloud-init[364]: Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 "
            f"07:41:11 +0000. Datasource DataSource{name}Local [seed=/dev/vdb].  Up 163.29 s"
        )
        assert re.search(pattern, line)
        assert not re.search(pattern, line.replace(name, "None"))
    assert result["boot_detail"] == (
        f"disk.qcow2 booted with bios (datasource {datasource}, hardware {hardware})"
    )


def test_an_unknown_name_from_the_console_is_not_passed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError):
        booted(tmp_path, monkeypatch, datasource="--accel=kvm")
    with pytest.raises(ValueError):
        booted(tmp_path, monkeypatch, hardware="--nic=e1000")


# -- the database ----------------------------------------------------------------------------


def test_the_migration_gives_existing_rows_todays_boot_test(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    engine = db.make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(
            text(
                "INSERT INTO configurations (id, name, description, created) "
                "VALUES (1, 'old', '', 0)"
            )
        )
    db.migrate(engine)
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT boot_datasource, boot_hardware FROM configurations")
        ).one()
        assert tuple(row) == ("none", "kvm")
        # and the migrated schema is the models' schema (nothing left to migrate)
        from alembic.autogenerate import compare_metadata

        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert [d for d in diff if "boot_" in repr(d)] == []
    engine.dispose()
