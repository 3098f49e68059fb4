"""Files a recipe names (`files: src`, `repositories: key`): kept inside the recipe's folder.

A recipe may come from anyone, so what it copies into an image must come from the
folder of the recipe file that names it, never from the build host. The rules:

- the path is relative and has no '..' (checked by the model, osbake.formats);
- no part of it is a symlink, and it is a regular file or a folder;
- inside a folder, every entry is a regular file, a folder, or a symlink whose
  target is relative and stays inside the copied folder (a symlink is copied as a
  symlink; one that points elsewhere would either dangle in the image or, followed,
  read the host). Devices, FIFOs and sockets are refused.

`check_source()` applies them when the recipe is loaded, so a bad path is an error
with the recipe's file and line before any work. `copy_source()` copies with the
same rules, opening every component relative to its parent with O_NOFOLLOW, so a
file swapped for a symlink after the check is refused, not followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from pathlib import Path

from osbake.formats import FormatError, shown

HINT = (
    "files must be inside the folder of the recipe that names them: copy the file there "
    "(not a symlink to it) and name it relative to the recipe, e.g. files/motd"
)
LINK_HINT = (
    "a symlink inside a copied folder must be relative and point inside that folder; "
    "make other links in the image with a run: command (ln -s)"
)


class MissingSource(FormatError):
    """The file does not exist (reported with the path it was looked for at)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message, "paths in 'files' are relative to the recipe file that names them"
        )


def _parts(relative: str) -> list[str]:
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if not parts or relative.startswith("/") or ".." in parts:
        raise FormatError(f"{shown(relative)} is not a path inside the recipe's folder", HINT)
    return parts


def link_stays_inside(inner: str, target: str) -> bool:
    """Whether symlink `inner` (a path relative to the copied folder) -> `target` stays in it."""
    if target.startswith("/") or "\x00" in target:
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(inner), target))
    return resolved != ".." and not resolved.startswith("../")


def check_source(folder: Path, relative: str, *, what: str = "src") -> Path:
    """Check `relative` inside `folder` by the rules above; return its path."""
    parts = _parts(relative)
    path = folder
    for index, part in enumerate(parts):
        path = path / part
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise MissingSource(f"the file {shown(relative)} does not exist ({path})") from None
        except OSError as exc:
            raise FormatError(
                f"cannot read {path}: {exc.strerror}", "check its permissions"
            ) from None
        if stat.S_ISLNK(info.st_mode):
            raise FormatError(
                f"{what} {shown(relative)} goes through a symlink ({path} -> "
                f"{shown(os.readlink(path))}), which could lead out of the recipe's folder",
                HINT,
            )
        last = index == len(parts) - 1
        if not last and not stat.S_ISDIR(info.st_mode):
            raise MissingSource(f"the file {shown(relative)} does not exist ({path})")
        if last and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise FormatError(
                f"{what} {shown(relative)} is not a regular file or folder "
                "(a device, FIFO or socket)",
                "copy regular files and folders only",
            )
    if path.is_dir():
        for inner, kind, target in walk_tree(path):
            if kind == "link" and not link_stays_inside(inner, target):
                raise FormatError(
                    f"{what} {shown(relative)} holds a symlink {shown(inner)} -> "
                    f"{shown(target)} that leads out of the copied folder",
                    LINK_HINT,
                )
            if kind == "other":
                raise FormatError(
                    f"{what} {shown(relative)} holds {shown(inner)}, which is not a regular "
                    "file, folder or symlink (a device, FIFO or socket)",
                    "remove it from the folder; only regular files, folders and symlinks "
                    "are copied",
                )
    return path


def walk_tree(top: Path) -> Iterator[tuple[str, str, str]]:
    """(path relative to top, kind, link target) of everything under `top`, not following links."""
    pending = [""]
    while pending:
        inner = pending.pop()
        with os.scandir(top / inner if inner else top) as entries:
            for entry in entries:
                name = f"{inner}/{entry.name}" if inner else entry.name
                if entry.is_symlink():
                    yield name, "link", os.readlink(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    yield name, "dir", ""
                    pending.append(name)
                elif entry.is_file(follow_symlinks=False):
                    yield name, "file", ""
                else:
                    yield name, "other", ""


# -- reading and copying without following symlinks ------------------------------------------

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def _open_beneath(folder: Path, relative: str) -> int:
    """An fd of `relative` under `folder`, every component opened without following links."""
    parts = _parts(relative)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise _refusal(relative, exc) from None
            os.close(fd)
            fd = child
        try:
            last = os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            raise _refusal(relative, exc) from None
        return last
    finally:
        os.close(fd)


def _refusal(relative: str, exc: OSError) -> FormatError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return FormatError(
            f"{shown(relative)} goes through a symlink (it changed after the recipe was checked?)",
            HINT,
        )
    if exc.errno == errno.ENOENT:
        return MissingSource(f"the file {shown(relative)} does not exist")
    return FormatError(f"cannot read {shown(relative)}: {exc.strerror}", "check its permissions")


def read_source(folder: Path, relative: str, limit: int) -> bytes:
    """The content of a regular file inside `folder` (at most `limit` bytes)."""
    fd = _open_beneath(folder, relative)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FormatError(f"{shown(relative)} is not a regular file", HINT)
        if info.st_size > limit:
            raise FormatError(
                f"{shown(relative)} is larger than the limit of {limit} bytes",
                f"use a file of at most {limit} bytes",
            )
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise FormatError(
                f"{shown(relative)} is larger than the limit of {limit} bytes",
                f"use a file of at most {limit} bytes",
            )
        return data
    finally:
        os.close(fd)


def copy_source(folder: Path, relative: str, dest: Path) -> None:
    """Copy a file or folder from inside `folder` to `dest` (which must not exist).

    Modes and modification times are kept; symlinks inside a folder are copied as
    symlinks (only those that stay inside it); nothing is followed.
    """
    fd = _open_beneath(folder, relative)
    try:
        _copy_fd(fd, relative, "", dest)
    finally:
        os.close(fd)


def _copy_fd(fd: int, relative: str, inner: str, dest: Path) -> None:
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode):
        os.set_blocking(fd, True)
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        try:
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        finally:
            os.close(out)
    elif stat.S_ISDIR(info.st_mode):
        os.mkdir(dest, 0o700)
        for entry in sorted(os.listdir(fd)):
            name = f"{inner}/{entry}" if inner else entry
            try:
                child = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise _refusal(f"{relative}/{name}", exc) from None
                target = os.readlink(entry, dir_fd=fd)
                if not link_stays_inside(name, target):
                    raise FormatError(
                        f"src {shown(relative)} holds a symlink {shown(name)} -> "
                        f"{shown(target)} that leads out of the copied folder",
                        LINK_HINT,
                    ) from None
                link_info = os.lstat(entry, dir_fd=fd)
                os.symlink(target, dest / entry)
                with contextlib.suppress(OSError):
                    os.utime(
                        dest / entry,
                        ns=(link_info.st_atime_ns, link_info.st_mtime_ns),
                        follow_symlinks=False,
                    )
                continue
            try:
                _copy_fd(child, relative, name, dest / entry)
            finally:
                os.close(child)
    else:
        raise FormatError(
            f"src {shown(relative)}{f' holds {shown(inner)}, which' if inner else ''} is not a "
            "regular file, folder or symlink (a device, FIFO or socket)",
            "copy regular files and folders only",
        )
    os.chmod(dest, stat.S_IMODE(info.st_mode))
    os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))
