"""The simplestreams writer, without signing (no processes): layout, serials, idempotence,
streams for the console, pruning, and nothing half-written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osbake.errors import ArtifactError, UsageError
from osbake.publish import Label, publish, publish_streams
from osbake.publish.streams import items
from osbake.publish.tree import read_streams
from tests.publish_helpers import make_build

DAILY = "org.osbake:daily:download"
RELEASED = "org.osbake:released:download"
PRODUCT = "org.osbake:demo:bookworm:amd64"


def versions(repo: Path, cid: str) -> dict[str, dict]:
    return read_streams(repo)[cid]["products"][PRODUCT]["versions"]


def tree_files(repo: Path) -> set[str]:
    return {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()}


def test_formats_map_to_ftypes_and_unknown_formats_keep_a_name(tmp_path: Path) -> None:
    manifest = make_build(
        tmp_path / "out",
        name="demo",
        files={
            "demo.qcow2": ("qcow2", b"q"),
            "demo.raw.tar.xz": ("raw.tar.xz", b"r"),
            "demo.tar.xz": ("tar.xz", b"t"),
            "demo.oci.tar": ("oci", b"o"),
            "demo.weird": ("weird fmt", b"w"),
        },
    )
    publish([manifest], tmp_path / "repo")
    (version,) = versions(tmp_path / "repo", DAILY).values()
    assert sorted(version["items"]) == [
        "disk.raw.tar.xz",
        "disk1.img",
        "manifest",
        "oci.tar",
        "root.tar.xz",
        "weird-fmt",
    ]
    assert version["items"]["disk1.img"]["path"] == "demo/bookworm/amd64/20261120/demo.qcow2"


def test_an_artifact_path_publishes_that_artifact_and_the_manifest(tmp_path: Path) -> None:
    make_build(
        tmp_path / "out",
        name="demo",
        files={"demo.qcow2": ("qcow2", b"q"), "demo.tar.zst": ("tar.zst", b"t")},
    )
    result = publish([tmp_path / "out/demo.tar.zst"], tmp_path / "repo")
    (version,) = result.versions
    assert sorted(Path(p).name for p in version.paths) == ["demo.manifest.json", "demo.tar.zst"]
    # Publishing the rest later adds to the same version, under new paths only.
    again = publish([tmp_path / "out/demo.manifest.json"], tmp_path / "repo")
    assert again.versions[0].version == version.version
    assert len(again.versions[0].paths) == 3


def test_same_day_builds_get_sortable_serials_and_republishing_changes_nothing(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    first = make_build(tmp_path / "a", finished="2026-11-20T08:00:00+00:00")
    second = make_build(tmp_path / "b", finished="2026-11-20T20:00:00+00:00")
    publish([first], repo)
    publish([second], repo)
    assert sorted(versions(repo, DAILY)) == ["20261120", "20261120.1"]
    before = {p: (repo / p).read_bytes() for p in tree_files(repo) if "streams" in p}
    result = publish([first], repo)
    assert result.versions[0].version == "20261120"
    assert not result.versions[0].new
    after = {p: (repo / p).read_bytes() for p in tree_files(repo) if "streams" in p}
    assert json.loads(after[f"streams/v1/{DAILY}.json"]) == json.loads(
        before[f"streams/v1/{DAILY}.json"]
    )


def test_serial_option_and_its_errors(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish([make_build(tmp_path / "a")], repo, serial="20250101")
    assert list(versions(repo, DAILY)) == ["20250101"]
    with pytest.raises(UsageError, match="already has a version 20250101"):
        publish([make_build(tmp_path / "b")], repo, serial="20250101")
    with pytest.raises(UsageError, match="YYYYMMDD"):
        publish([make_build(tmp_path / "c")], repo, serial="2025-01-01")


def test_labels_pick_the_stream(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish([make_build(tmp_path / "a")], repo, label=Label.BETA)
    publish([make_build(tmp_path / "b", finished="2026-11-21T00:00:00+00:00")], repo)
    assert versions(repo, RELEASED)["20261120"]["label"] == "beta"
    assert versions(repo, DAILY)["20261121"]["label"] == "daily"


def test_keep_prunes_versions_and_deletes_their_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for day in ("18", "19", "20"):
        publish(
            [make_build(tmp_path / day, finished=f"2026-11-{day}T00:00:00+00:00")], repo, keep=2
        )
    assert sorted(versions(repo, DAILY)) == ["20261119", "20261120"]
    assert not (repo / "demo/bookworm/amd64/20261118").exists()
    referenced = {i.path for i in items(read_streams(repo)[DAILY])}
    on_disk = {p for p in tree_files(repo) if p.startswith("demo/")}
    pages = {p for p in on_disk if p.rsplit("/", 1)[-1] in ("README", "index.html", "SHA256SUMS")}
    assert on_disk - pages == referenced


def test_publish_streams_follows_the_consoles_lists(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    a = make_build(tmp_path / "a", finished="2026-11-18T00:00:00+00:00")
    b = make_build(tmp_path / "b", finished="2026-11-19T00:00:00+00:00")
    publish_streams(repo, daily=[a, b], released=[])
    assert sorted(versions(repo, DAILY)) == ["20261118", "20261119"]
    # b is blessed as rc, a is dropped: b keeps its serial and files in both streams.
    publish_streams(repo, daily=[b], released=[(b, Label.RC)])
    assert sorted(versions(repo, DAILY)) == ["20261119"]
    assert versions(repo, RELEASED)["20261119"]["label"] == "rc"
    assert not (repo / "demo/bookworm/amd64/20261118").exists()
    assert (repo / "demo/bookworm/amd64/20261119/demo.qcow2").exists()
    publish_streams(repo, daily=[], released=[])
    assert read_streams(repo)[DAILY]["products"] == {}
    assert not (repo / "demo").exists()
    with pytest.raises(UsageError, match="milestone"):
        publish_streams(repo, daily=[], released=[(a, Label.DAILY)])


def test_a_changed_artifact_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    good = make_build(tmp_path / "good")
    publish([good], repo)
    before = tree_files(repo) - {"index.html"}
    bad = make_build(
        tmp_path / "bad",
        finished="2026-11-21T00:00:00+00:00",
        files={"demo.qcow2": ("qcow2", b"1234"), "demo.tar.zst": ("tar.zst", b"abcd")},
    )
    (tmp_path / "bad/demo.tar.zst").write_bytes(b"abce")  # same size, other content
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        publish([bad], repo)
    assert tree_files(repo) - {"index.html"} == before
    assert not list(repo.rglob("*.partial"))


def test_bad_inputs_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        publish([tmp_path / "missing.qcow2"], tmp_path / "repo")
    (tmp_path / "stray.qcow2").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="no manifest beside it"):
        publish([tmp_path / "stray.qcow2"], tmp_path / "repo")
    (tmp_path / "broken.manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match="not an osbake manifest"):
        publish([tmp_path / "broken.manifest.json"], tmp_path / "repo")
    with pytest.raises(UsageError, match="keep at least one"):
        publish([make_build(tmp_path / "a")], tmp_path / "repo", keep=0)
    assert not (tmp_path / "repo/streams").exists()


def test_pages_describe_the_version_for_people(tmp_path: Path) -> None:
    manifest = make_build(tmp_path / "out", name="demo", variant="ec2")
    publish([manifest], tmp_path / "repo")
    folder = tmp_path / "repo/demo-ec2/bookworm/amd64/20261120"
    readme = (folder / "README").read_text()
    assert "variant 'ec2'" in readme
    assert "sha256sum -c SHA256SUMS" in readme
    assert "osbake inspect demo.qcow2" in readme
    page = (folder / "index.html").read_text()
    assert '<a href="demo.qcow2">demo.qcow2</a>' in page
    root_page = (tmp_path / "repo/index.html").read_text()
    assert "org.osbake:demo-ec2:bookworm:amd64" in root_page


def test_versions_pruned_in_the_run_that_added_them_leave_no_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    a = make_build(tmp_path / "a", finished="2026-11-18T00:00:00+00:00")
    b = make_build(tmp_path / "b", finished="2026-11-19T00:00:00+00:00")
    publish([a, b], repo, keep=1)
    assert list(versions(repo, DAILY)) == ["20261119"]
    assert not (repo / "demo/bookworm/amd64/20261118").exists()


def test_each_new_version_gets_a_changelog_against_the_previous_one(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = make_build(
        tmp_path / "a", finished="2026-11-18T00:00:00+00:00", packages=[("bash", "5.2")]
    )
    second = make_build(
        tmp_path / "b",
        finished="2026-11-19T00:00:00+00:00",
        packages=[("bash", "5.2.15"), ("jq", "1.6")],
    )
    publish([first], repo)
    publish([second], repo)
    found = versions(repo, DAILY)
    assert "changelog" not in found["20261118"]["items"]  # nothing before it
    new = found["20261119"]["items"]
    folder = repo / "demo/bookworm/amd64/20261119"
    assert new["changelog"]["ftype"] == "changelog"
    assert new["changelog"]["path"] == "demo/bookworm/amd64/20261119/changelog.txt"
    assert new["changelog.json"]["path"] == "demo/bookworm/amd64/20261119/changelog.json"
    text = (folder / "changelog.txt").read_text()
    assert text.splitlines()[:2] == [f"--- {PRODUCT} 20261118", f"+++ {PRODUCT} 20261119"]
    assert "  + jq 1.6 (amd64)" in text
    assert "  ~ bash 5.2 -> 5.2.15" in text
    data = json.loads((folder / "changelog.json").read_text())
    assert data["packages"]["added"] == [{"name": "jq", "version": "1.6", "arch": "amd64"}]
    assert data["packages"]["changed"][0]["change"] == "upgraded"
    assert "changelog.txt says what changed" in (folder / "README").read_text()
    assert "osbake inspect demo.qcow2" in (folder / "README").read_text()
    assert "changelog.txt" in (folder / "SHA256SUMS").read_text()
    # deterministic: the same two builds published into another tree give the same bytes
    other = tmp_path / "other"
    publish([first], other)
    publish([second], other)
    for name in ("changelog.txt", "changelog.json"):
        again = other / "demo/bookworm/amd64/20261119" / name
        assert again.read_bytes() == (folder / name).read_bytes()
    # republishing changes nothing; pruning the version deletes its changelog too
    assert not publish([second], repo).versions[0].new
    publish([make_build(tmp_path / "c", finished="2026-11-20T00:00:00+00:00")], repo, keep=1)
    assert not folder.exists()


def test_publish_streams_writes_changelogs_in_each_stream(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    a = make_build(tmp_path / "a", finished="2026-11-18T00:00:00+00:00")
    b = make_build(tmp_path / "b", finished="2026-11-19T00:00:00+00:00", packages=[("bash", "5.3")])
    publish_streams(repo, daily=[a, b], released=[(b, Label.RC)])
    daily = versions(repo, DAILY)
    assert "changelog" in daily["20261119"]["items"]
    assert "changelog" not in daily["20261118"]["items"]
    # released has b only: b's version is shared with daily, folder and all
    assert versions(repo, RELEASED)["20261119"]["items"] == daily["20261119"]["items"]


def test_builds_given_newest_first_still_get_changelogs_in_order(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    old = make_build(tmp_path / "a", finished="2026-11-18T00:00:00+00:00")
    new = make_build(
        tmp_path / "b", finished="2026-11-19T00:00:00+00:00", packages=[("bash", "5.3")]
    )
    result = publish([new, old], repo)
    assert [v.version for v in result.versions] == ["20261119", "20261118"]  # as given
    found = versions(repo, DAILY)
    assert "changelog" in found["20261119"]["items"]
    assert "changelog" not in found["20261118"]["items"]
