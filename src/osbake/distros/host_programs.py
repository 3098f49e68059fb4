"""A foreign build's dpkg, maintainer scripts and mkinitramfs start the host's own programs.

Under qemu-user a program costs 30 to 60 ms to start, whatever it then does
(readlink: 40 ms, against 1.5 ms natively), and the arm64 cloud image's build
starts about 9000 of them: dpkg-deb and tar for each package, ca-certificates'
scripts 1700 (sed, grep, basename, ln), mkinitramfs 3900 (readlink, realpath,
cp, mkdir and modinfo per module); and Python starts slowly (py3compile).

Where the tree holds (or is about to install) the same version of a package as the
host, the host's build of its programs is the same program. They are copied with the
host's libraries and loader into a folder the tree sees as /run/osbake/native (their
loader and library path rewritten there by patchelf), so nothing of the host's
architecture is written to the tree:
- `Programs.path()` and `Programs.apt_options()` put them first on PATH, for dpkg and
  the maintainer scripts (apt sets dpkg's PATH from DPkg::Path, not from its own);
- `bootstrap_hook()` does the same for mmdebstrap's essential packages;
- `py3compile` runs the tree's script with the host's python3.X (its standard library
  bound beside it) where the interpreter's packages have the tree's versions;
- `Programs.for_mkinitramfs()` runs mkinitramfs with them first on the PATH it
  sets. Never bound over the tree's own files: mkinitramfs copies programs (kmod)
  from the tree into the initramfs, and a bind would have it copy the host's. A
  hook that copies one found on the PATH is caught by `check_archives()`.

Set OSBAKE_HOST_PROGRAMS=0 to run every program of the tree under emulation.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from osbake import run as runner
from osbake import sandbox
from osbake.errors import DistroError, OsbakeError
from osbake.events import Events

INSIDE = f"{sandbox.RUN_DIR}/native"
SEARCH_PATH = f"{INSIDE}/bin:{sandbox.TREE_PATH}"
# The programs a foreign build starts most often (counted with strace), by package.
# Left out: what looks up users and groups by name (chown, id: the tree's NSS modules
# are of its own architecture) and what only runs once or twice.
PROGRAMS = {
    "coreutils": (
        "[", "basename", "cat", "chmod", "cp", "cut", "dirname", "expr", "head", "ln",
        "mkdir", "mktemp", "mv", "readlink", "realpath", "rm", "rmdir", "sort", "stat",
        "tail", "test", "touch", "tr", "uniq", "wc",
    ),
    "sed": ("sed",),
    "grep": ("grep",),
    "findutils": ("find", "xargs"),
    "kmod": ("kmod",),
    # dpkg starts dpkg-deb by name for each package it unpacks (which decompresses the
    # data archive) and dpkg-deb starts tar for its control archive. Not dpkg itself:
    # it takes its own architecture from how it was built.
    "dpkg": ("dpkg-deb",),
    "tar": ("tar",),
}  # fmt: skip
# kmod is one program under several names (argv[0]); /usr/sbin/modinfo links to it.
ALIASES = {"kmod": ("modinfo", "depmod")}
_LIBRARY = re.compile(r"=>\s+(/\S+)\s+\(0x")
_MKINITRAMFS_PATH = re.compile(r"^export PATH='([^'\n]*)'$", re.MULTILINE)


@dataclass(frozen=True)
class Programs:
    """The host's programs staged for one tree: `folder` is /run/osbake/native inside."""

    folder: Path
    names: tuple[str, ...]
    extra: tuple[sandbox.Bind, ...] = ()  # the Python standard library beside python3.X

    def binds(self) -> list[sandbox.Bind]:
        return [sandbox.Bind(self.folder, INSIDE), *self.extra]

    def path(self) -> dict[str, str]:
        """The environment that puts them first on PATH (with the bind)."""
        return {"PATH": SEARCH_PATH}

    def apt_options(self) -> list[str]:
        """apt-get's options that give dpkg and its maintainer scripts the same PATH:
        apt sets dpkg's PATH from DPkg::Path, whatever its own is."""
        return ["-o", f"DPkg::Path={SEARCH_PATH}"]

    def for_mkinitramfs(self, tree: Path) -> list[sandbox.Bind]:
        """Binds that run the tree's mkinitramfs with them first on the PATH it sets.

        mkinitramfs exports a PATH of its own: a copy of the tree's script with the
        folder put in front of it is bound over the script (it is not copied into the
        initramfs; the programs it copies in are read from the tree's own files). []
        when the script does not set PATH the one way this knows.
        """
        script = tree / "usr/sbin/mkinitramfs"
        if not script.is_file() or script.is_symlink():
            return []
        text = script.read_text(errors="surrogateescape")
        changed, count = _MKINITRAMFS_PATH.subn(
            lambda found: f"export PATH='{INSIDE}/bin:{found[1]}'", text
        )
        if count != 1:
            return []
        copy = self.folder / "mkinitramfs"
        copy.write_text(changed, errors="surrogateescape")
        copy.chmod(0o755)
        return [*self.binds(), sandbox.Bind(copy, "/usr/sbin/mkinitramfs")]


def leaked(archive: Path) -> list[str]:
    """The names in a cpio archive (newc) under /run/osbake/native: host programs that
    a hook found on the PATH (`command -v`) and copied into the initramfs."""
    found = []
    prefix = INSIDE.lstrip("/")
    with archive.open("rb") as handle:
        while True:
            header = handle.read(110)
            if len(header) < 110 or header[:5] != b"07070":
                break
            size, name_size = int(header[54:62], 16), int(header[94:102], 16)
            name = handle.read(name_size).rstrip(b"\0").decode(errors="replace")
            handle.seek((-(110 + name_size)) % 4, 1)
            if name == "TRAILER!!!":
                break
            if name.lstrip("./").startswith(prefix):
                found.append(name)
            handle.seek(size + (-size) % 4, 1)
    return found


def check_archives(folder: Path) -> None:
    """Raise a DistroError if an initramfs archive (*.cpio) in `folder` holds a host
    program: it would run on a machine of the tree's architecture."""
    for archive in sorted(folder.glob("*.cpio")):
        copied = leaked(archive)
        if copied:
            raise DistroError(
                f"an initramfs hook copied the host's {copied[0]} into the initramfs "
                "(it found the host's program on the PATH)",
                hint="build again with OSBAKE_HOST_PROGRAMS=0, and report the hook to osbake",
            )


def installed_versions(tree: Path) -> dict[str, str]:
    """Package → version of what dpkg's status in `tree` says is installed."""
    try:
        text = (tree / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return {}
    versions = {}
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


def host_versions(packages: list[str]) -> dict[str, str]:
    """Package → version installed on the host (dpkg-query), or {} on a host without dpkg."""
    if not runner.exists("dpkg-query"):
        return {}
    done = runner.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status} ${Version}\n", *packages],
        capture=True,
        check=False,
    )
    versions = {}
    for line in done.text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "installed":
            versions[parts[0]] = parts[2]
    return versions


def matching(tree_versions: dict[str, str], host: dict[str, str]) -> list[str]:
    """The programs whose package has the same version in the tree and on the host."""
    return [
        name
        for package, names in PROGRAMS.items()
        if package in host and tree_versions.get(package) == host[package]
        for name in names
    ]


def deb_versions(debs: list[Path]) -> dict[str, str]:
    """Package → version of the package files (.deb) among `debs` that hold PROGRAMS,
    read with the host's dpkg-deb: what mmdebstrap is about to install."""
    versions = {}
    for deb in debs:
        if deb.name.split("_", 1)[0] not in PROGRAMS:
            continue
        done = runner.run(
            ["dpkg-deb", "--showformat=${Package} ${Version}", "--show", str(deb)],
            capture=True,
            check=False,
        )
        parts = done.text.split()
        if done.returncode == 0 and len(parts) == 2:
            versions[parts[0]] = parts[1]
    return versions


def enabled() -> bool:
    """Whether a foreign build may use them (OSBAKE_HOST_PROGRAMS=0 turns them off)."""
    return os.environ.get("OSBAKE_HOST_PROGRAMS", "1") != "0" and runner.exists("patchelf")


def prepare(
    tree: Path,
    workdir: Path,
    events: Events | None = None,
    planned: dict[str, str] | None = None,
) -> Programs | None:
    """Stage the host's programs that the tree has too, or None (none, or turned off).
    `planned`: the versions of the packages about to be installed, which win."""
    if not enabled():
        return None
    return stage(installed_versions(tree) | (planned or {}), workdir, events)


def stage(versions: dict[str, str], workdir: Path, events: Events | None = None) -> Programs | None:
    """Stage the host's programs whose package has the version `versions` gives."""
    python = python_version(versions)
    wanted = list(PROGRAMS) + (list(python_packages(python)) if python else [])
    host = host_versions(wanted)
    names = matching(versions, host)
    if python and any(versions.get(p) != host.get(p) for p in python_packages(python)):
        python = None
    if not names:
        return None
    folder = workdir / "host-programs"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "bin").mkdir(parents=True)
    (folder / "lib").mkdir()
    loader = ""
    staged_names = []
    for name in names:
        found = runner.which(name)
        if found is None:
            continue  # dpkg lists the package, but the program is gone: the tree's runs
        copied = _copy_program(Path(found).resolve(), folder / "bin" / name, folder, loader)
        if copied:
            loader = copied
            for alias in ALIASES.get(name, ()):
                (folder / "bin" / alias).symlink_to(name)
            staged_names.append(name)
    if not staged_names:
        return None
    binds: tuple[sandbox.Bind, ...] = ()
    if python and _stage_python(python, folder, loader):
        staged_names.append("py3compile")
        stdlib = f"lib/python{python}"
        binds = (sandbox.Bind(Path("/usr") / stdlib, f"{INSIDE}/python/{stdlib}"),)
    shutil.copy2(Path(loader).resolve(), folder / Path(loader).name)
    if events is not None:
        events.log(
            f"host programs for the tree (the same versions as the host's): "
            f"{' '.join(staged_names)}"
        )
    return Programs(folder, tuple(staged_names), binds)


def _copy_program(source: Path, staged: Path, folder: Path, loader: str) -> str:
    """Copy a host program with its libraries into `folder`, pointed at them, and return
    its loader; "" for one that is not a dynamic program of the host's one loader
    (`loader`, or any when it is "") (the tree's own runs)."""
    interpreter = runner.run(
        ["patchelf", "--print-interpreter", str(source)], capture=True, check=False
    ).text.strip()
    if not interpreter or interpreter != (loader or interpreter):
        return ""
    for library in _LIBRARY.findall(runner.run(["ldd", str(source)], capture=True).text):
        copy = folder / "lib" / Path(library).name
        if not copy.exists():
            shutil.copy2(Path(library).resolve(), copy)
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, staged)
    runner.run(
        [
            "patchelf", "--set-interpreter", f"{INSIDE}/{Path(interpreter).name}",
            "--force-rpath", "--set-rpath", f"{INSIDE}/lib", str(staged),
        ]
    )  # fmt: skip
    return interpreter


def python_version(versions: dict[str, str]) -> str | None:
    """The tree's Python 3 ("3.11", from its python3.X-minimal package), or None."""
    found = [
        match[1] for name in versions if (match := re.fullmatch(r"python(3\.\d+)-minimal", name))
    ]
    return found[0] if len(found) == 1 else None  # none, or two: leave Python alone


def python_packages(version: str) -> tuple[str, ...]:
    """The packages of the interpreter and its standard library: all must match."""
    return (f"python{version}-minimal", f"libpython{version}-minimal", f"libpython{version}-stdlib")


# Run by its path (/run/osbake/native/bin/py3compile) where postinsts call py3compile:
# the tree's own script, run by the host's build of the same Python, which it also
# starts for the byte-compiling itself (it names /usr/bin/python3.X).
PY3COMPILE = """#!{inside}/python/bin/python{version} -ES
import builtins
import runpy
import subprocess
import sys

builtins.exit = sys.exit  # without the site module (-S), which the script calls
TREE = ("/usr/bin/python{version}", "python{version}")


class Popen(subprocess.Popen):
    def __init__(self, args, *rest, **options):
        if not isinstance(args, (str, bytes)) and args and args[0] in TREE:
            args = ["{inside}/python/bin/python{version}", *args[1:]]
        super().__init__(args, *rest, **options)


subprocess.Popen = Popen
sys.argv[0] = "/usr/bin/py3compile"
runpy.run_path("/usr/bin/py3compile", run_name="__main__")
"""


def _stage_python(version: str, folder: Path, loader: str) -> bool:
    """The host's python3.X (its standard library bound beside it) and the py3compile
    that runs the tree's script with it. Byte code depends on the Python version
    only: the host's compiles what the tree's would."""
    source = Path(f"/usr/bin/python{version}")
    stdlib = Path(f"/usr/lib/python{version}")
    if not (source.is_file() and (stdlib / "py_compile.py").is_file()):
        return False
    if not _copy_program(source, folder / "python/bin" / source.name, folder, loader):
        return False
    (folder / "python/lib" / stdlib.name).mkdir(parents=True)  # where the bind goes
    shim = folder / "bin/py3compile"
    shim.write_text(PY3COMPILE.format(inside=INSIDE, version=version))
    shim.chmod(0o755)
    return True


def bootstrap_hook(tree: Path, workdir: Path, essential: str) -> str:
    """mmdebstrap's extract hook: stage the programs whose package has the version of
    the essential package files about to be installed (`essential`: their paths in the
    tree, as in MMDEBSTRAP_ESSENTIAL), and bind them read-only at /run/osbake/native in
    the tree, where the PATH mmdebstrap passes on finds them first. The customize hook
    unmounts them (`Debian.bootstrap`). Returns a line for the build log."""
    debs = [tree / name.lstrip("/") for name in essential.split()]
    programs = stage(deb_versions(debs), workdir)
    if programs is None:
        return "host programs for the bootstrap: none has the tree's version"
    for bind in programs.binds():
        target = tree / bind.target.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        runner.run(["mount", "--bind", str(bind.source), str(target)])
        runner.run(["mount", "-o", "remount,bind,ro", str(target)])
    return f"host programs for the bootstrap: {' '.join(programs.names)}"


def main(argv: list[str]) -> int:
    """mmdebstrap's extract hook, TREE WORKDIR: a line for the build log, or osbake's
    message (no traceback) and status 1, which fails the bootstrap. A bind made before
    the failure goes with the build's mount namespace."""
    essential = os.environ.get("MMDEBSTRAP_ESSENTIAL", "")
    try:
        print(bootstrap_hook(Path(argv[0]), Path(argv[1]), essential))
    except (OsbakeError, OSError) as error:
        what = error.message if isinstance(error, OsbakeError) else str(error)
        hint = "build again with OSBAKE_HOST_PROGRAMS=0 to run the tree's own programs"
        failed = DistroError(f"host programs for the bootstrap: {what}", hint=hint)
        print(f"osbake: {failed.render()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # run by mmdebstrap as its extract hook: TREE WORKDIR
    sys.exit(main(sys.argv[1:]))
