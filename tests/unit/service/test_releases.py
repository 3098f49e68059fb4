"""The release queue's pure parts: push targets, milestone labels, served files, jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from osbake.errors import UsageError
from osbake.publish.streams import Label
from osbake.service import releases, views
from osbake.service.models import JobState, ReleaseJob, ReleaseJobBuild
from osbake.service.problems import NotFound
from osbake.service.release_web import _confined, media_type
from tests.unit.service.release_job_migration import check_release_job_builds_migration
from tests.unit.service.service_harness import Harness
from tests.unit.service.test_web import login


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


# -- one waiting publish job serves every build that asks --------------------------------------


def blessed(harness: Harness, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        build = harness.build()
        harness.run_fake(build["id"], disk=True)
        reply = harness.call("POST", f"/api/builds/{build['id']}/bless")
        assert reply.status_code == 200, reply.text
        ids.append(build["id"])
    return ids


def release_jobs(harness: Harness, build_id: int) -> list[dict[str, Any]]:
    return harness.call("GET", f"/api/builds/{build_id}", "viewer").json()["release"]["jobs"]  # type: ignore[no-any-return]


def finish_jobs(harness: Harness) -> None:
    """As if the release queue had run every waiting job."""
    with harness.console.db.session() as session:
        for job in session.scalars(select(ReleaseJob)).all():
            job.state = JobState.SUCCEEDED
        session.commit()


def test_a_shared_publish_job_is_listed_by_every_build_it_serves(harness: Harness) -> None:
    harness.configuration()
    first, second = blessed(harness, 2)
    (job,) = release_jobs(harness, first)
    assert (job["kind"], job["state"], job["build"]) == ("publish", "queued", first)
    assert job["builds"] == [first, second]
    # the second blessing was served by the first build's job: its page lists it too
    assert [j["id"] for j in release_jobs(harness, second)] == [job["id"]]
    assert harness.call("GET", f"/api/release-jobs/{job['id']}", "viewer").json() == job
    with harness.console.db.session() as session:
        for build_id in (first, second):
            listed = views.build_release_json(session, build_id)["jobs"]
            assert [(j["id"], j["builds"]) for j in listed] == [(job["id"], [first, second])]
    login(harness)
    page = harness.client.get(f"/builds/{second}").text
    assert 'id="release-jobs"' in page and f"publish #{job['id']}" in page


def test_a_build_that_asks_twice_is_linked_once(harness: Harness) -> None:
    harness.configuration()
    (build_id,) = blessed(harness, 1)
    assert harness.call("POST", f"/api/builds/{build_id}/unbless").status_code == 200
    assert harness.call("POST", f"/api/builds/{build_id}/bless").status_code == 200
    with harness.console.db.session() as session:
        again = releases.request_publish(session, "asked again", build_id)
        assert again.build_ids == [build_id]
        links = session.scalars(select(ReleaseJobBuild)).all()
        assert [(link.job_id, link.build_id) for link in links] == [(again.id, build_id)]
    (job,) = release_jobs(harness, build_id)
    assert job["builds"] == [build_id]


def test_an_unblessing_served_by_another_builds_job_is_listed(harness: Harness) -> None:
    harness.configuration()
    first, second = blessed(harness, 2)
    finish_jobs(harness)
    (third,) = blessed(harness, 1)  # a new waiting job, asked for by the third build
    assert harness.call("POST", f"/api/builds/{first}/unbless").status_code == 200
    shared = release_jobs(harness, third)[-1]
    assert (shared["state"], shared["build"], shared["builds"]) == ("queued", third, [first, third])
    assert [j["id"] for j in release_jobs(harness, first)] == [shared["id"] - 1, shared["id"]]
    assert [j["id"] for j in release_jobs(harness, second)] == [shared["id"] - 1]
    # an admin's "publish now" joins the waiting job and links no build
    reply = harness.call("POST", "/api/publish")
    assert reply.json()["id"] == shared["id"]
    assert reply.json()["builds"] == [first, third]


def test_a_build_linked_meanwhile_by_another_request_is_not_linked_twice(
    harness: Harness,
) -> None:
    harness.configuration()
    (build_id,) = blessed(harness, 1)
    finish_jobs(harness)
    with harness.console.db.session() as session:
        waiting = releases.request_publish(session, "another ask")  # no build: no link
        assert waiting.build_ids == []
        # a second console request links the build to the same waiting job meanwhile;
        # this session still holds the job as it was
        with harness.console.db.session() as other:
            assert releases.request_publish(other, "its blessing", build_id).id == waiting.id
        job = releases.request_publish(session, "the same blessing again", build_id)
        assert job.id == waiting.id
        assert session.scalars(
            select(ReleaseJobBuild.build_id).where(ReleaseJobBuild.job_id == job.id)
        ).all() == [build_id]


def test_deleting_a_job_or_a_build_takes_its_links(harness: Harness) -> None:
    harness.configuration()
    first, second = blessed(harness, 2)
    with harness.console.db.session() as session:
        (job,) = session.scalars(select(ReleaseJob)).all()
        job_id = job.id
        # the database drops the links itself (foreign keys are on): no purge is blocked
        for table in ("artifacts", "packages"):
            session.execute(text(f"DELETE FROM {table} WHERE build_id = :id"), {"id": second})
        session.execute(text("DELETE FROM builds WHERE id = :id"), {"id": second})
        session.commit()
        session.expire_all()
        assert session.scalars(select(ReleaseJobBuild.build_id)).all() == [first]
        session.delete(session.get(ReleaseJob, job_id))
        session.commit()
        assert session.scalars(select(ReleaseJobBuild)).all() == []


def test_the_migration_links_old_publish_jobs_and_goes_down_and_up(tmp_path: Path) -> None:
    check_release_job_builds_migration(f"sqlite:///{tmp_path / 'console.db'}")
