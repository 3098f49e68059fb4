"""The console publishes blessed builds as signed streams, serves them, and pushes them.

`osbake serve` with its embedded worker and the stand-in build (service_fake_build.py:
a tarball and a small "raw disk" in a second, a boot test that passes); read by the
reference client (`sstream-query`) and `osbake sync` over HTTP with the console's
public keyring; pushed into EC2 (moto, two regions) by a push job.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from osbake.service.config import normalise_database_url
from tests.integration.service_support import (
    RunningConsole,
    add_configuration,
    fake_commands,
    postgres,
    start_build,
    wait_for,
)
from tests.integration.test_sync_ec2 import AWS_ENV, moto_endpoint  # noqa: F401  (a fixture)
from tests.unit.service.release_job_migration import check_release_job_builds_migration

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
REGIONS = ("eu-west-1", "us-east-1")


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory,
    moto_endpoint: str,  # noqa: F811
    glance: Path,
) -> Iterator[RunningConsole]:
    root = tmp_path_factory.mktemp("releases")
    running = RunningConsole(
        root / "data",
        args=["--keep", "2"],
        env={
            **fake_commands(),
            **AWS_ENV,
            "AWS_ENDPOINT_URL": moto_endpoint,
            "OS_CLIENT_CONFIG_FILE": str(glance),
            "OSBAKE_CACHE_DIR": str(root / "cache"),
        },
    )
    try:
        yield running
    finally:
        running.stop()


def booted_build(api: httpx.Client, console: RunningConsole, name: str, milestone: str) -> int:
    build_id = start_build(api, name, milestone=milestone)
    build = console.wait_state(build_id, {"succeeded", "failed", "cancelled"}, 120)
    assert build["state"] == "succeeded", build["reason"]
    assert build["boot_test"]["state"] == "passed", build["boot_test"]
    return build_id


def blessed_build(api: httpx.Client, console: RunningConsole, name: str, milestone: str) -> int:
    build_id = booted_build(api, console, name, milestone)
    reply = api.post(f"/api/builds/{build_id}/bless")
    assert reply.status_code == 200, reply.text
    return build_id


def jobs_done(api: httpx.Client, build_id: int, kinds: set[str]) -> list[dict[str, Any]]:
    """Wait until the build's release jobs of these kinds have ended; return them."""

    def check() -> list[dict[str, Any]] | None:
        jobs = api.get(f"/api/builds/{build_id}").json()["release"]["jobs"]
        mine = [j for j in jobs if j["kind"] in kinds]
        if {j["kind"] for j in mine} == kinds and all(
            j["state"] in ("succeeded", "failed") for j in mine
        ):
            return mine
        return None

    return wait_for(check, 120, f"release jobs {kinds} of build {build_id}", every=0.5)  # type: ignore[no-any-return]


def publish_done(api: httpx.Client, after: int) -> dict[str, Any]:
    """Wait for a publish job newer than job `after` to succeed."""

    def check() -> dict[str, Any] | None:
        for job_id in range(after + 1, after + 50):
            reply = api.get(f"/api/release-jobs/{job_id}")
            if reply.status_code == 404:
                return None
            job = reply.json()
            if job["kind"] == "publish" and job["state"] == "succeeded":
                return job  # type: ignore[no-any-return]
            assert job["state"] != "failed", api.get(job["log"]).text
        return None

    return wait_for(check, 120, "a publish job", every=0.5)  # type: ignore[no-any-return]


def query(keyring: Path, url: str, *filters: str) -> list[dict[str, str]]:
    result = subprocess.run(
        [
            str(BIN / "sstream-query"),
            "--keyring",
            str(keyring),
            f"{url}/streams/v1/index.sjson",
            *filters,
            "--output-format",
            '{"version_name": "%(version_name)s", "ftype": "%(ftype)s", "sha256": "%(sha256)s", '
            '"label": "%(label)s", "path": "%(path)s", "content_id": "%(content_id)s"}',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_blessing_publishes_signed_streams_that_the_reference_client_reads(
    console: RunningConsole,
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    glance: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = console.url
    with console.api() as api, console.api("") as anonymous:
        add_configuration(api, "rel", 'name: rel\ndescription: "disk"\noutputs: [tar]\n')
        targets = {
            "targets": [
                f"ec2:{','.join(REGIONS)}",
                "glance:testglance",
                f"dir:{tmp_path / 'mirror'}",
            ]
        }
        assert api.put("/api/configurations/rel/push-targets", json=targets).status_code == 200
        viewer = console.make_token("viewer", "looker")
        with console.api(viewer) as looker:
            refused = looker.put("/api/configurations/rel/push-targets", json=targets)
            assert refused.status_code == 403
        hostile = api.put("/api/configurations/rel/push-targets", json={"targets": ["dir:../x"]})
        assert hostile.status_code in (400, 422)

        build_id = blessed_build(api, console, "rel", "beta")
        jobs = jobs_done(api, build_id, {"publish", "push"})
        failed = [api.get(j["log"]).text for j in jobs if j["state"] != "succeeded"]
        assert not failed, failed
        assert {j["target"] for j in jobs if j["kind"] == "push"} == set(targets["targets"])

        # The key: its fingerprint through the API, its public keyring for anyone.
        fingerprint = api.get("/api/signing-key").json()["fingerprint"]
        keyring = tmp_path / "console.gpg"
        reply = anonymous.get("/keyring.gpg")
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/pgp-keys"
        keyring.write_bytes(reply.content)
        listed = subprocess.run(
            ["gpg", "--batch", "--with-colons", "--show-keys", str(keyring)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"fpr:::::::::{fingerprint}:" in listed
        gnupg = console.data / "gnupg"
        assert gnupg.stat().st_mode & 0o777 == 0o700

        # The reference client reads the console's signed index, anonymously.
        build = api.get(f"/api/builds/{build_id}").json()
        disk = next(a for a in build["artifacts"] if a["format"] == "raw")
        items = query(keyring, url, "ftype=disk.raw")
        assert [(i["sha256"], i["label"]) for i in items] == [(disk["sha256"], "beta")]
        assert items[0]["content_id"] == "org.osbake:released:download"
        assert anonymous.get("/api/builds").status_code == 401  # the rest still needs a token

        # The files beside the streams: ranges, types, sha256.
        path = items[0]["path"]
        whole = anonymous.get(f"/{path}")
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).hexdigest() == disk["sha256"]
        head = anonymous.head(f"/{path}")
        assert (head.status_code, head.headers["content-length"]) == (200, str(disk["size"]))
        assert head.content == b""
        part = anonymous.get(f"/{path}", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.content == whole.content[10:20]
        assert anonymous.get("/streams/v1/index.json").headers["content-type"] == (
            "application/json"
        )
        folder = path.rsplit("/", 1)[0]
        sums = anonymous.get(f"/{folder}/SHA256SUMS")
        assert sums.headers["content-type"].startswith("text/plain")
        assert f"{disk['sha256']}  {disk['file']}" in sums.text

        # osbake sync from the console's URL, checked with its keyring.
        mirror = tmp_path / "synced"
        synced = subprocess.run(
            [sys.executable, "-m", "osbake", "sync", url, str(mirror), "--keyring", str(keyring)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert synced.returncode == 0, synced.stderr
        assert hashlib.sha256((mirror / path).read_bytes()).hexdigest() == disk["sha256"]
        # ... and the push job's mirror folder has it too
        assert (tmp_path / "mirror" / path).is_file()

        # EC2: the push job registered the AMI in both regions; the build's page shows it.
        import boto3

        for region in REGIONS:
            ec2 = boto3.client(
                "ec2",
                region_name=region,
                endpoint_url=moto_endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            images = ec2.describe_images(Owners=["self"])["Images"]
            assert len(images) == 1, (region, images)
            assert images[0]["Name"].startswith("rel-bookworm-amd64-")
        # Glance: the push job uploaded it; `osbake sync` from the console's URL finds it
        # there and uploads nothing.
        import openstack

        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(glance))
        cloud = openstack.connect(cloud="testglance")
        pushed = [
            i for i in cloud.image.images() if i.properties.get("source_sha256") == disk["sha256"]
        ]
        assert [(i.status, i.properties["simplestreams_label"]) for i in pushed] == [
            ("active", "beta")
        ]
        again = subprocess.run(
            [
                *(sys.executable, "-m", "osbake", "sync", url, "glance:testglance"),
                *("--keyring", str(keyring), "recipe=rel"),
            ],
            env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(glance)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert again.returncode == 0, again.stderr
        assert "1 items selected, 0 transferred" in again.stdout

        page = api.get(f"/builds/{build_id}").text
        assert f"ec2:{','.join(REGIONS)}" in page
        assert 'id="release-log"' in page and "/static/release.js" in page  # the live log
        assert api.get("/static/release.js").status_code == 200
        push = next(j for j in jobs if (j["target"] or "").startswith("ec2:"))
        assert "succeeded" in page
        assert "snapshot" in api.get(push["log"]).text.lower()
        releases = api.get("/configurations/rel/releases").text
        assert "beta" in releases and fingerprint in releases


HOSTILE = [
    "/images/../osbake.db",
    "/images/%2e%2e/secret_key",
    "/images/..%2fsecret_key",
    "/images/%2e%2e%2f%2e%2e%2fsecret_key",
    "/images//etc/passwd",
    "/images/.osbake-publish.lock",
    "/streams/v1/..%2f..%2fsecret_key",
    "/streams/v1/%2e%2e",
    "/streams/v1/../../secret_key",
    "/images/rel/%00",
    "/images/link-out",
    "/images/link-out/secret_key",
]


def test_hostile_paths_stay_in_the_tree(console: RunningConsole) -> None:
    images = console.data / "publish" / "images"
    images.mkdir(parents=True, exist_ok=True)
    link = images / "link-out"
    if not link.is_symlink():
        link.symlink_to(console.data)
    secret = (console.data / "secret_key").read_bytes()
    with httpx.Client(base_url=console.url, timeout=30) as anonymous:
        for path in HOSTILE:
            reply = anonymous.get(path)
            assert reply.status_code in (400, 401, 404, 422), (path, reply.status_code)
            assert secret not in reply.content, path


def test_unblessing_and_retention_remove_versions_and_the_stream_stays_valid(
    console: RunningConsole, tmp_path: Path
) -> None:
    url = console.url
    keyring = tmp_path / "console.gpg"
    keyring.write_bytes(httpx.get(f"{url}/keyring.gpg").content)
    with console.api() as api:
        add_configuration(api, "keep", 'name: keep\ndescription: "disk"\noutputs: [tar]\n')
        bad = {"targets": ["glance:no-such-cloud"]}
        assert api.put("/api/configurations/keep/push-targets", json=bad).status_code == 200
        first = blessed_build(api, console, "keep", "final")
        jobs = jobs_done(api, first, {"publish", "push"})
        # a push that cannot work is tried three times, each attempt in its log
        push = next(j for j in jobs if j["kind"] == "push")
        assert (push["state"], push["attempts"]) == ("failed", 3)
        assert "no-such-cloud" in push["error"]
        assert api.get(push["log"]).text.count("==> push (attempt") == 3
        assert "failed" in api.get(f"/builds/{first}").text
        assert [i["label"] for i in query(keyring, url, "recipe=keep", "ftype=disk.raw")] == [
            "final"
        ]

        # A reader that queries the whole time never sees a broken or unsigned stream.
        stop = threading.Event()
        failures: list[str] = []
        reads = [0]

        def reader() -> None:
            while not stop.is_set():
                result = subprocess.run(
                    [
                        str(BIN / "sstream-query"),
                        "--keyring",
                        str(keyring),
                        f"{url}/streams/v1/index.sjson",
                        "recipe=keep",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                reads[0] += 1
                if result.returncode != 0:
                    failures.append(result.stderr)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            second = blessed_build(api, console, "keep", "final")
            third = blessed_build(api, console, "keep", "final")
            # --keep 2: the oldest of the three leaves the stream, and its files go. One
            # waiting publish job serves every blessing that asks while it waits, so the
            # third build may have no publish job of its own: wait for the outcome.
            disks = {
                b: next(
                    a["sha256"]
                    for a in api.get(f"/api/builds/{b}").json()["artifacts"]
                    if a["format"] == "raw"
                )
                for b in (first, second, third)
            }

            def newest_two_published() -> dict[str, Any] | None:
                listed = {i["sha256"] for i in query(keyring, url, "recipe=keep", "ftype=disk.raw")}
                old = api.get(f"/api/builds/{first}").json()["release"]["publications"][0]
                done = listed == {disks[second], disks[third]} and old["removed"] is not None
                return old if done else None

            old = wait_for(newest_two_published, 300, "the stream to hold the newest two")
            assert old["files"]
            for path in old["files"]:
                assert httpx.get(f"{url}{path}").status_code == 404, path
            # unbless the newest: it leaves at the next publish (and the stream shows the
            # newest two blessed builds again)
            newest = api.get(f"/api/builds/{third}").json()["release"]
            last_job = max(j["id"] for j in newest["jobs"])
            assert api.post(f"/api/builds/{third}/unbless").status_code == 200
            publish_done(api, last_job)
            listed = {i["sha256"] for i in query(keyring, url, "recipe=keep", "ftype=disk.raw")}
            assert listed == {disks[first], disks[second]}
            for path in newest["publications"][0]["files"]:
                assert httpx.get(f"{url}{path}").status_code == 404, path
        finally:
            stop.set()
            thread.join()
        assert reads[0] > 0
        assert not failures, failures[:2]
        assert (console.data / "publish" / "streams" / "v1" / "index.sjson").is_file()


def test_a_publish_job_shared_by_two_blessings_is_on_both_builds_pages(
    console: RunningConsole,
) -> None:
    with console.api() as api:
        add_configuration(api, "pair", 'name: pair\ndescription: "disk"\noutputs: [tar]\n')
        first, second = (booted_build(api, console, "pair", "daily") for _ in range(2))

        def publishing(build_id: int) -> list[dict[str, Any]]:
            jobs = api.get(f"/api/builds/{build_id}").json()["release"]["jobs"]
            return [j for j in jobs if j["kind"] == "publish"]

        def quiet() -> bool:
            jobs = publishing(first) + publishing(second)
            return all(j["state"] in ("succeeded", "failed") for j in jobs)

        # Two blessings back to back share one waiting publish job, unless the release
        # queue (a round every second) took the first one in between: then try again.
        for _ in range(5):
            wait_for(quiet, 120, "the publish jobs of both builds to end")
            for build_id in (first, second):
                assert api.post(f"/api/builds/{build_id}/bless").status_code == 200
            shared = publishing(second)[-1]
            if shared["build"] == first:
                break
            for build_id in (first, second):
                assert api.post(f"/api/builds/{build_id}/unbless").status_code == 200
        assert (shared["build"], shared["builds"]) == (first, [first, second])
        assert publishing(first)[-1]["id"] == shared["id"]

        def ended() -> dict[str, Any] | None:
            job = api.get(f"/api/release-jobs/{shared['id']}").json()
            return job if job["state"] in ("succeeded", "failed") else None

        done = wait_for(ended, 120, f"publish job {shared['id']}")
        assert done["state"] == "succeeded", api.get(done["log"]).text
        # the second build was published by the first build's job, and its page says so
        release = api.get(f"/api/builds/{second}").json()["release"]
        assert [p["removed"] for p in release["publications"]][-1:] == [None]
        assert [j["state"] for j in release["jobs"] if j["id"] == shared["id"]] == ["succeeded"]
        page = api.get(f"/builds/{second}").text
        assert f"publish #{shared['id']}" in page


def test_the_release_job_builds_migration_on_postgresql() -> None:
    with postgres() as url:
        check_release_job_builds_migration(normalise_database_url(url))


def test_an_imported_signing_key_signs_and_stays_in_the_data_folder(tmp_path: Path) -> None:
    from osbake.errors import UsageError
    from osbake.service import signing_key
    from osbake.service.config import ServiceSettings
    from tests.publish_helpers import gpg_key

    settings = ServiceSettings.create(tmp_path / "data", queue_url="memory://")
    with gpg_key(tmp_path / "theirs") as key:
        exported = tmp_path / "secret.gpg"
        exported.write_bytes(
            subprocess.run(
                ["gpg", "--batch", "--export-secret-keys", key.fingerprint],
                env=key.env,
                capture_output=True,
                check=True,
            ).stdout
        )
    try:
        assert signing_key.import_key(settings, exported) == key.fingerprint
        assert signing_key.import_key(settings, exported) == key.fingerprint  # again: the same
        assert signing_key.fingerprint(settings) == key.fingerprint
        home = signing_key.gnupg_home(settings)
        assert home.stat().st_mode & 0o777 == 0o700
        assert home.parent.stat().st_mode & 0o777 == 0o700
        shown = subprocess.run(
            ["gpg", "--batch", "--with-colons", "--show-keys"],
            input=signing_key.public_keyring(settings),
            capture_output=True,
            check=True,
        ).stdout.decode()
        assert f"fpr:::::::::{key.fingerprint}:" in shown
        assert "sec:" not in shown  # the public part only
        bad = tmp_path / "nothing.gpg"
        bad.write_bytes(b"not a key")
        with pytest.raises(UsageError, match=r"nothing\.gpg: gpg cannot import it"):
            signing_key.import_key(settings, bad)
    finally:
        signing_key.stop_agent(settings)
