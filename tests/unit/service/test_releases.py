"""The release queue's pure parts: push targets, milestone labels, served files, jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake.errors import UsageError
from osbake.publish.streams import Label
from osbake.service import releases
from osbake.service.problems import NotFound
from osbake.service.release_web import _confined, media_type
from tests.unit.service.service_harness import Harness


@pytest.mark.parametrize(
    "spec",
    ["glance:", "glance:mycloud", "ec2:eu-west-1", "ec2:eu-west-1,us-east-1", "dir:/srv/mirror"],
)
def test_push_targets_that_are_taken(spec: str) -> None:
    assert releases.check_push_target(spec) == spec


@pytest.mark.parametrize(
    "spec",
    [
        "/srv/mirror",  # no kind
        "rsync:host:/x",
        "glance:../clouds",
        "glance:a b",
        "ec2:",
        "ec2:eu-west-1,,us-east-1",
        "ec2:eu-west-1,eu-west-1",
        "ec2:EU-WEST-1",
        "dir:relative/path",
        "dir:/srv/../etc",
        "dir:/srv/mi\nrror",
        "dir:/srv/\x00",
    ],
)
def test_push_targets_that_are_refused(spec: str) -> None:
    with pytest.raises(UsageError):
        releases.check_push_target(spec)


@pytest.mark.parametrize(
    ("milestone", "label"),
    [
        ("daily", Label.DAILY),
        ("weekly", Label.DAILY),
        ("12.4 respin", Label.DAILY),
        ("alpha", Label.ALPHA),
        ("beta", Label.BETA),
        ("rc", Label.RC),
        ("final", Label.FINAL),
        ("Final", Label.FINAL),
    ],
)
def test_milestones_are_stream_labels(milestone: str, label: Label) -> None:
    assert releases.label_for(milestone) is label


def test_content_types_of_published_files() -> None:
    assert media_type("index.json") == "application/json"
    assert media_type("index.sjson").startswith("text/plain")
    assert media_type("SHA256SUMS").startswith("text/plain")
    assert media_type("README").startswith("text/plain")
    assert media_type("index.html").startswith("text/html")
    assert media_type("debian.qcow2") == "application/x-qemu-disk"
    assert media_type("debian.raw") == "application/octet-stream"


def test_served_files_stay_in_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "disk.qcow2").write_bytes(b"disk")
    (root / "a" / ".hidden").write_bytes(b"partial")
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "a" / "out").symlink_to(tmp_path / "secret")
    (root / "a" / "up").symlink_to(tmp_path)
    assert _confined(root, "a/b/disk.qcow2") == root / "a" / "b" / "disk.qcow2"
    for hostile in (
        "../secret",
        "a/../../secret",
        "a/./b/disk.qcow2",
        "/etc/passwd",
        "a//b/disk.qcow2",
        "a/.hidden",
        "a/out",
        "a/up/secret",
        "a/b",
        "a/b/missing",
        "",
        "a/b/disk.qcow2\x00",
    ):
        with pytest.raises(NotFound):
            _confined(root, hostile)


def test_blessing_and_unblessing_queue_one_publish_job(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    harness.run_fake(build["id"], disk=True)
    assert harness.call("POST", f"/api/builds/{build['id']}/bless").status_code == 200
    assert harness.call("POST", f"/api/builds/{build['id']}/unbless", "builder").status_code == 403
    data = harness.call("POST", f"/api/builds/{build['id']}/unbless").json()
    assert data["blessed"] is False
    jobs = data["release"]["jobs"]
    # the two asks share one waiting publish job: it publishes what is blessed when it runs
    assert [(j["kind"], j["state"]) for j in jobs] == [("publish", "queued")]
    assert harness.call("POST", f"/api/builds/{build['id']}/unbless").status_code == 409
    reply = harness.call("PUT", "/api/configurations/demo/push-targets", json={"targets": ["x"]})
    assert reply.status_code == 422
    assert "glance:CLOUD" in reply.json()["hint"]
    reply = harness.call(
        "PUT", "/api/configurations/demo/push-targets", json={"targets": ["ec2:eu-west-1"]}
    )
    assert reply.json() == {"push_targets": ["ec2:eu-west-1"]}
    shown = harness.call("GET", "/api/configurations/demo/releases", "viewer").json()
    assert shown["push_targets"] == ["ec2:eu-west-1"]
