"""Files a recipe copies stay inside its folder, and are copied without following links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from osbake.formats import FormatError
from osbake.recipe.files import MissingSource, check_source, copy_source, read_source


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "recipe"
    (root / "files").mkdir(parents=True)
    (root / "files" / "motd").write_text("hello\n")
    (root / "site" / "css").mkdir(parents=True)
    (root / "site" / "index.html").write_text("<p>hi</p>\n")
    (root / "site" / "css" / "a.css").write_text("p {}\n")
    (root / "site" / "tool").write_text("#!/bin/sh\n")
    (root / "site" / "tool").chmod(0o750)
    (root / "site" / "css" / "same").symlink_to("a.css")
    (root / "site" / "css" / "home").symlink_to("../index.html")
    (tmp_path / "secret").write_text("s3cret\n")
    return root


def test_a_file_and_a_folder_inside_pass(folder: Path) -> None:
    assert check_source(folder, "files/motd") == folder / "files" / "motd"
    assert check_source(folder, "site") == folder / "site"


@pytest.mark.parametrize("relative", ["/etc/hostname", "../secret", "files/../../secret", ""])
def test_paths_that_leave_are_refused(folder: Path, relative: str) -> None:
    with pytest.raises(FormatError):
        check_source(folder, relative)


def test_a_symlink_in_the_path_is_refused(folder: Path) -> None:
    (folder / "hostname").symlink_to("/etc/hostname")
    (folder / "etc").symlink_to("/etc")
    (folder / "inside").symlink_to("files/motd")  # even one that stays inside
    for relative in ("hostname", "etc/hostname", "inside"):
        with pytest.raises(FormatError, match="symlink"):
            check_source(folder, relative)


@pytest.mark.parametrize("target", ["/etc/shadow", "../../secret", "../../../../../etc"])
def test_a_link_leading_out_of_a_copied_folder_is_refused(folder: Path, target: str) -> None:
    (folder / "site" / "css" / "out").symlink_to(target)
    with pytest.raises(FormatError, match="leads out of the copied folder"):
        check_source(folder, "site")


def test_devices_and_fifos_are_refused(folder: Path) -> None:
    os.mkfifo(folder / "pipe")
    os.mkfifo(folder / "site" / "pipe")
    with pytest.raises(FormatError, match="not a regular file or folder"):
        check_source(folder, "pipe")
    with pytest.raises(FormatError, match="not a regular file, folder or symlink"):
        check_source(folder, "site")


def test_a_missing_file_names_where_it_was_looked_for(folder: Path) -> None:
    with pytest.raises(MissingSource) as caught:
        check_source(folder, "files/nope")
    assert str(folder / "files" / "nope") in caught.value.message
    assert caught.value.hint


def test_a_folder_is_copied_with_modes_times_and_inner_links(folder: Path, tmp_path: Path) -> None:
    os.utime(folder / "site" / "index.html", (1_000_000, 1_000_000))
    dest = tmp_path / "copy"
    copy_source(folder, "site", dest)
    assert (dest / "index.html").read_text() == "<p>hi</p>\n"
    assert (dest / "index.html").stat().st_mtime == 1_000_000
    assert stat.S_IMODE((dest / "tool").stat().st_mode) == 0o750
    assert os.readlink(dest / "css" / "same") == "a.css"
    assert os.readlink(dest / "css" / "home") == "../index.html"


def test_a_file_is_copied(folder: Path, tmp_path: Path) -> None:
    copy_source(folder, "files/motd", tmp_path / "motd")
    assert (tmp_path / "motd").read_text() == "hello\n"


def test_a_file_swapped_for_a_link_after_the_check_is_not_followed(
    folder: Path, tmp_path: Path
) -> None:
    """The check passed; then the file became a symlink to a host file (a race)."""
    check_source(folder, "files/motd")
    (folder / "files" / "motd").unlink()
    (folder / "files" / "motd").symlink_to(tmp_path / "secret")
    with pytest.raises(FormatError, match="symlink"):
        copy_source(folder, "files/motd", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_a_folder_swapped_for_a_link_after_the_check_is_not_followed(
    folder: Path, tmp_path: Path
) -> None:
    check_source(folder, "site/index.html")
    (folder / "site").rename(folder / "site.old")
    (folder / "site").symlink_to(tmp_path)
    (tmp_path / "index.html").write_text("host file\n")
    with pytest.raises(FormatError, match="symlink"):
        copy_source(folder, "site/index.html", tmp_path / "copy")


def test_a_link_planted_inside_a_folder_after_the_check_is_refused(
    folder: Path, tmp_path: Path
) -> None:
    check_source(folder, "site")
    (folder / "site" / "planted").symlink_to("/etc/shadow")
    with pytest.raises(FormatError, match="leads out"):
        copy_source(folder, "site", tmp_path / "copy")


def test_a_fifo_planted_after_the_check_does_not_hang(folder: Path, tmp_path: Path) -> None:
    check_source(folder, "files/motd")
    (folder / "files" / "motd").unlink()
    os.mkfifo(folder / "files" / "motd")
    with pytest.raises(FormatError, match="not a regular file"):
        copy_source(folder, "files/motd", tmp_path / "copy")


def test_read_source_is_bounded_and_confined(folder: Path) -> None:
    assert read_source(folder, "files/motd", 100) == b"hello\n"
    with pytest.raises(FormatError, match="larger than the limit"):
        read_source(folder, "files/motd", 3)
    (folder / "key").symlink_to("/etc/passwd")
    with pytest.raises(FormatError, match="symlink"):
        read_source(folder, "key", 1000)
