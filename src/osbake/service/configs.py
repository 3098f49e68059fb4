"""Configurations: recipes with their element folders, stored as immutable versions.

Every edit or import makes a new version; a build names the version it was made
from, so the exact files can be materialised again for a rebuild.
"""

from __future__ import annotations

import bz2
import dataclasses
import difflib
import gzip
import hashlib
import io
import logging
import lzma
import re
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from osbake import run as runner
from osbake.errors import Location, OsbakeError, RecipeError, UsageError
from osbake.service.models import ConfigFile, Configuration, ConfigVersion

if TYPE_CHECKING:
    from osbake.recipe import Recipe

log = logging.getLogger("osbake.service")

MAX_FILES = 2000
MAX_BYTES = 64 << 20
MAX_ARCHIVE_BYTES = MAX_BYTES + (MAX_FILES * 2 + 16) * 1024  # the files, tar headers, padding
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
SKIPPED_DIRS = {".git", "__pycache__", ".venv", "out"}


@dataclasses.dataclass
class FileSet:
    """The files of a configuration: relative POSIX path -> (content, mode)."""

    files: dict[str, tuple[bytes, int]] = dataclasses.field(default_factory=dict)

    def add(self, path: str, data: bytes, mode: int = 0o644) -> None:
        clean = safe_path(path)
        if len(self.files) >= MAX_FILES:
            raise UsageError(f"a configuration may have at most {MAX_FILES} files")
        self.files[clean] = (data, 0o755 if mode & 0o111 else 0o644)
        if sum(len(d) for d, _ in self.files.values()) > MAX_BYTES:
            raise UsageError(
                f"the configuration is larger than {MAX_BYTES >> 20} MiB",
                hint="keep large files out of it (packages come from repositories)",
            )

    def digest(self) -> str:
        sha = hashlib.sha256()
        for path in sorted(self.files):
            data, mode = self.files[path]
            sha.update(f"{path}\0{mode:o}\0{len(data)}\0".encode())
            sha.update(data)
        return sha.hexdigest()

    def write(self, dest: Path) -> None:
        for path, (data, mode) in sorted(self.files.items()):
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)

    def recipe_candidates(self) -> list[str]:
        return sorted(p for p in self.files if "/" not in p and p.endswith((".yaml", ".yml")))


def safe_path(path: str) -> str:
    pure = PurePosixPath(path.replace("\\", "/"))
    try:
        encoded = path.encode()
    except UnicodeError:
        encoded = b"\0"
    if any(ord(c) < 0x20 or c == "\x7f" for c in path) or b"\0" in encoded or len(encoded) > 1024:
        raise UsageError(
            f"'{path[:80]!r}' is not a file name osbake keeps",
            hint="no control characters, at most 1024 bytes",
        )
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or str(pure) == ".":
        raise UsageError(
            f"'{path}' is not a relative path inside the configuration",
            hint="file names must stay inside the configuration's folder",
        )
    return str(pure)


def from_directory(path: Path) -> FileSet:
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory", hint="give the recipe's folder")
    files = FileSet()
    for item in sorted(path.rglob("*")):
        relative = item.relative_to(path)
        if any(part in SKIPPED_DIRS for part in relative.parts):
            continue
        if item.is_file() and not item.is_symlink():
            files.add(relative.as_posix(), item.read_bytes(), item.stat().st_mode)
    return files


def from_archive(data: bytes) -> FileSet:
    """A .tar, .tar.gz, .tar.xz or .tar.bz2 of the configuration's folder."""
    return from_upload(io.BytesIO(data))


def from_upload(handle: BinaryIO) -> FileSet:
    """Read an uploaded archive as a stream, never inflating more than a configuration holds.

    A small compressed file can expand into terabytes (a "zip bomb"): the
    decompressed stream is cut off at `MAX_ARCHIVE_BYTES`, members are counted,
    and each member's size is checked before it is read.
    """
    head = handle.read(6)
    handle.seek(0)
    opener = next((o for magic, o in DECOMPRESSORS if head.startswith(magic)), None)
    stream: BinaryIO = opener(handle) if opener is not None else handle
    bounded = _Bounded(stream, MAX_ARCHIVE_BYTES)
    files = FileSet()
    entries: list[tuple[str, bytes, int]] = []
    total = 0
    try:
        with tarfile.open(fileobj=bounded, mode="r|") as archive:
            for count, member in enumerate(archive):
                if count >= MAX_FILES * 2:
                    raise UsageError(
                        f"the archive has more than {MAX_FILES * 2} entries",
                        hint=f"a configuration has at most {MAX_FILES} files",
                    )
                if not member.isfile():
                    continue
                total += member.size
                if total > MAX_BYTES:
                    raise UsageError(
                        f"the archive holds more than {MAX_BYTES >> 20} MiB",
                        hint="keep large files out of the configuration",
                    )
                extracted = archive.extractfile(member)
                if extracted is not None:
                    entries.append((member.name, extracted.read(), member.mode))
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
        raise UsageError(
            f"the upload is not a readable tar archive: {exc}",
            hint="upload a .tar, .tar.gz, .tar.xz or .tar.bz2 of the recipe's folder",
        ) from None
    prefix = _common_prefix([name for name, _, _ in entries])
    for name, data, mode in entries:
        relative = name[len(prefix) :] if prefix else name
        if any(part in SKIPPED_DIRS for part in PurePosixPath(relative).parts):
            continue
        files.add(relative, data, mode)
    return files


class _Bounded(io.RawIOBase):
    """A reader that fails once more than `limit` bytes came through."""

    def __init__(self, inner: BinaryIO, limit: int) -> None:
        self.inner = inner
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(min(len(buffer), self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise UsageError(
                f"the archive unpacks to more than {MAX_ARCHIVE_BYTES >> 20} MiB",
                hint="is it a compressed bomb? a configuration holds at most "
                f"{MAX_BYTES >> 20} MiB",
            )
        buffer[: len(data)] = data
        return len(data)


def _gzip(handle: BinaryIO) -> Any:
    return gzip.GzipFile(fileobj=handle, mode="rb")


DECOMPRESSORS: list[tuple[bytes, Callable[[BinaryIO], Any]]] = [
    (b"\x1f\x8b", _gzip),
    (b"\xfd7zXZ", lzma.LZMAFile),
    (b"BZh", bz2.BZ2File),
]


def _common_prefix(names: list[str]) -> str:
    """'dir/' when every file of the archive is inside one top folder without a recipe."""
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop() + "/"
    return ""


def is_local_git(url: str) -> bool:
    """A path or file:// URL: a repository on the console's own disk."""
    return url.startswith(("/", ".", "~", "file:")) or ("://" not in url and ":" not in url)


def from_git(url: str, ref: str | None = None, subdir: str = "") -> FileSet:
    """Clone a git repository (shallow) and take the files of `subdir`."""
    # fullmatch: with match, "$" would also let a trailing newline through
    if url.startswith("-") or not re.fullmatch(r"[A-Za-z0-9+.@:/_~-]+", url):
        raise UsageError(f"'{url}' does not look like a git URL or path")
    if ref is not None and (ref.startswith("-") or not re.fullmatch(r"[A-Za-z0-9._/+-]+", ref)):
        raise UsageError(f"'{ref}' does not look like a branch or tag")
    with tempfile.TemporaryDirectory(prefix="osbake-git-") as tmp:
        argv = ["git", "clone", "--quiet", "--depth", "1"]
        if ref:
            argv += ["--branch", ref]
        argv += ["--", url, f"{tmp}/repo"]
        runner.run(
            argv, hint="check the repository URL and branch", env={"GIT_TERMINAL_PROMPT": "0"}
        )
        root = Path(tmp) / "repo"
        if subdir:
            root = root / safe_path(subdir)
        return from_directory(root)


def validate(files: FileSet, recipe_file: str) -> list[list[str | None]]:
    """Load and check the recipe (every variant x arch); errors name the stored file.

    The recipe is loaded with the configuration's folder as its root, so nothing it
    extends or copies lies outside the configuration, and no variant may take packages
    from the build host's own files (see `check_sources`).
    """
    from osbake import recipe as recipe_mod
    from osbake.plan import check_recipe

    if recipe_file not in files.files:
        candidates = files.recipe_candidates()
        raise RecipeError(
            f"the configuration has no file '{recipe_file}'",
            hint=f"recipes at its top: {', '.join(candidates)}"
            if candidates
            else "add the recipe (a .yaml file) at the top of the configuration",
        )
    with tempfile.TemporaryDirectory(prefix="osbake-check-") as tmp:
        root = Path(tmp).resolve()
        files.write(root)
        try:
            recipe = recipe_mod.load(root / recipe_file, root=root)
            check_sources(recipe)
            targets = check_recipe(recipe)
        except OsbakeError as exc:
            raise relocate(exc, root) from None
        except (ValueError, TypeError, RecursionError, MemoryError, OSError) as exc:
            # A loader defect must not become a 500: refuse the input, keep the trace.
            log.exception("checking the recipe %s failed unexpectedly", recipe_file)
            raise RecipeError(
                f"the recipe could not be checked: {type(exc).__name__}",
                location=Location(file=Path(recipe_file)),
                hint="simplify the recipe; tell osbake's developers if it looks right",
            ) from None
    return [[variant, str(arch)] for variant, arch in targets]


# URI schemes that read the build host's own files: a stored configuration is untrusted
# input, and a worker would hand it whatever that path holds on its host.
HOST_SCHEMES = ("file", "copy")


def check_sources(recipe: Recipe) -> None:
    """Refuse a mirror or repository URI of a HOST_SCHEMES scheme, in any variant."""
    from osbake import recipe as recipe_mod

    for variant in [None, *recipe.variants]:
        chosen = recipe_mod.select_variant(recipe, variant)
        uris: list[tuple[tuple[str | int, ...], str | None]] = [(("mirror",), chosen.mirror)]
        uris += [(("repositories", i, "uri"), r.uri) for i, r in enumerate(chosen.repositories)]
        for where, uri in uris:
            scheme = (uri or "").partition("://")[0]
            if scheme in HOST_SCHEMES:
                raise RecipeError(
                    f"the console does not build from {scheme}:// URIs "
                    f"('{where[0]}' of {f'variant {variant!r}' if variant else 'the recipe'}): "
                    "they read the files of the host the build runs on",
                    location=recipe_mod.locate(chosen, where),
                    hint="use an http://, https:// or ftp:// mirror or repository "
                    "(file:// and copy:// are for `osbake build` on your own machine)",
                )


def relocate(exc: OsbakeError, root: Path) -> OsbakeError:
    """The same error with paths shown relative to the configuration."""
    prefix = str(root) + "/"

    def clean(text: str | None) -> str | None:
        return text.replace(prefix, "") if text is not None else None

    location = exc.location
    if location is not None and location.file is not None:
        try:
            relative = Path(location.file).resolve().relative_to(root)
            location = dataclasses.replace(location, file=relative)
        except ValueError:
            pass
    fresh = type(exc).__new__(type(exc))
    OsbakeError.__init__(fresh, clean(exc.message), hint=clean(exc.hint), location=location)
    fresh.exit_code = exc.exit_code
    return fresh


def check_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise UsageError(
            f"'{name}' is not a configuration name",
            hint="use lowercase letters, digits, '.', '_' and '-' (at most 128)",
        )
    return name


def save_version(
    session: Session,
    name: str,
    files: FileSet,
    *,
    recipe_file: str | None = None,
    message: str = "",
    author: str = "",
    source: str = "",
    description: str = "",
) -> tuple[ConfigVersion, bool]:
    """Validate and store the files as the next version; (version, created).

    Storing the same files again makes no new version.
    """
    check_name(name)
    configuration = session.scalar(select(Configuration).where(Configuration.name == name))
    latest = latest_version(session, configuration) if configuration else None
    if recipe_file is None:
        recipe_file = latest.recipe_file if latest else _guess_recipe(files)
    targets = validate(files, recipe_file)
    digest = files.digest()
    if latest is not None and latest.digest == digest and latest.recipe_file == recipe_file:
        return latest, False
    if configuration is None:
        configuration = Configuration(name=name, description=description)
        session.add(configuration)
        session.flush()
    elif description:
        configuration.description = description
    number = (
        session.scalar(
            select(func.max(ConfigVersion.number)).where(
                ConfigVersion.configuration_id == configuration.id
            )
        )
        or 0
    ) + 1
    version = ConfigVersion(
        configuration_id=configuration.id,
        number=number,
        recipe_file=recipe_file,
        message=message,
        author=author,
        source=source,
        digest=digest,
        targets=targets,
    )
    version.files = [
        ConfigFile(path=path, mode=mode, data=data) for path, (data, mode) in files.files.items()
    ]
    session.add(version)
    session.flush()
    return version, True


def _guess_recipe(files: FileSet) -> str:
    candidates = files.recipe_candidates()
    if "recipe.yaml" in candidates:
        return "recipe.yaml"
    if len(candidates) == 1:
        return candidates[0]
    raise UsageError(
        "cannot tell which file is the recipe",
        location=Location(key="recipe_file"),
        hint=f"name it with recipe_file (one of: {', '.join(candidates) or 'no .yaml at the top'})",
    )


def latest_version(session: Session, configuration: Configuration) -> ConfigVersion | None:
    return session.scalar(
        select(ConfigVersion)
        .where(ConfigVersion.configuration_id == configuration.id)
        .order_by(ConfigVersion.number.desc())
        .limit(1)
    )


def fileset(version: ConfigVersion) -> FileSet:
    return FileSet({f.path: (f.data, f.mode) for f in version.files})


def archive(version: ConfigVersion) -> bytes:
    """The version's files as a .tar.gz (what workers download)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for item in version.files:
            info = tarfile.TarInfo(item.path)
            info.size = len(item.data)
            info.mode = item.mode
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(item.data))
    return buffer.getvalue()


def extract(data: bytes, dest: Path) -> None:
    """Materialise an archive made by `archive` (paths checked again)."""
    files = FileSet()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                files.add(member.name, handle.read(), member.mode & stat.S_IRWXU)
    files.write(dest)


def diff(old: ConfigVersion, new: ConfigVersion) -> str:
    """A unified diff of every file between two versions."""
    before, after = fileset(old).files, fileset(new).files
    out: list[str] = []
    for path in sorted(set(before) | set(after)):
        a = before.get(path, (b"", 0))
        b = after.get(path, (b"", 0))
        if a == b:
            continue
        if b"\0" in a[0] or b"\0" in b[0]:
            out.append(f"Binary files a/{path} and b/{path} differ\n")
            continue
        out.extend(
            difflib.unified_diff(
                a[0].decode(errors="replace").splitlines(keepends=True),
                b[0].decode(errors="replace").splitlines(keepends=True),
                fromfile=f"a/{path}" if path in before else "/dev/null",
                tofile=f"b/{path}" if path in after else "/dev/null",
            )
        )
        if a[1] and b[1] and a[1] != b[1]:
            out.append(f"mode of {path}: {a[1]:o} -> {b[1]:o}\n")
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)
