"""Debian, bootstrapped with mmdebstrap."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
import urllib.error
import urllib.request
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbake import binfmt, sandbox
from osbake import run as runner
from osbake.arch import Arch
from osbake.distros import Distro, Package, host_initramfs, host_programs, kernels
from osbake.distros.apt_sources import AptSource, read_host_sources
from osbake.errors import DistroError, RecipeError
from osbake.formats import FormatError
from osbake.recipe import Recipe, locate
from osbake.recipe.files import read_source
from osbake.recipe.loader import source_folder
from osbake.sbom import Installed, read_debian_tree

if TYPE_CHECKING:
    from osbake.distros import Work
    from osbake.elements.options import OptionValues
    from osbake.manifest import Manifest

ROLLING = ("sid", "unstable", "experimental")
# What dpkg, apt and ldconfig write during a build that records its time (the
# manifest and the SBOM say what was installed); the running system makes them anew.
BUILD_RECORDS = (
    "/var/log/dpkg.log",
    "/var/log/alternatives.log",
    "/var/log/bootstrap.log",
    "/var/log/apt/history.log",
    "/var/log/apt/term.log",
    "/var/log/apt/eipp.log.xz",
    "/var/cache/ldconfig/aux-cache",
)
PRE_USRMERGE = ("stretch", "buster", "bullseye")
# Kernels: Debian's flavour per arch (linux-image-<flavour>); "server" is the generic
# kernel, trimmed later. The generic flavour is the arch's name unless named here.
CLOUD_KERNEL_ARCHES = (Arch.AMD64, Arch.ARM64)
GENERIC_KERNEL_FLAVOURS = {Arch.ARMHF: "armmp", Arch.I386: "686-pae", Arch.PPC64EL: "powerpc64le"}
# Debian's UEFI GRUB (grub-efi-<name>-bin): i386's is named for its 32-bit firmware.
GRUB_EFI_ARCHES = (Arch.AMD64, Arch.ARM64, Arch.I386, Arch.RISCV64)
APT_ARCHIVES = "/var/cache/apt/archives"
# The apt settings mmdebstrap writes into the tree (its --aptopt), removed at the end.
MMDEBSTRAP_SETTINGS = "/etc/apt/apt.conf.d/99mmdebstrap"
DPKG_FORMAT = "${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n"
MIRROR_TIMEOUT = 20
# A repository's key file: a keyring of a few keys is far below this.
KEY_LIMIT = 1 << 20


_APT_INST = re.compile(r"^Inst (\S+?)(?::\S+)? (?:\[\S+\] )?\((\S+) ", re.MULTILINE)


def apt_installs(simulation: str) -> dict[str, str]:
    """Package → version of what `apt-get -s install` says it would install."""
    return dict(_APT_INST.findall(simulation))


class Debian(Distro):
    name = "debian"
    element = "debian"
    modules = (
        "osbake.distros",
        "osbake.distros.debian",
        "osbake.distros.apt_sources",
        "osbake.distros.host_initramfs",
        "osbake.distros.host_programs",
    )
    package_cache_dir = APT_ARCHIVES
    efi_dir = "debian"
    menu_title = "Debian GNU/Linux"

    # -- sources -------------------------------------------------------------------------

    @cached_property
    def sources(self) -> list[AptSource]:
        recipe = self.recipe
        release = recipe.release
        components = tuple(recipe.components)
        host = read_host_sources()
        if recipe.mirror:
            archive_uri = recipe.mirror.rstrip("/")
        else:
            archive = host.archive()
            if archive is None:
                raise DistroError(
                    "no Debian mirror found in this machine's apt sources "
                    "(/etc/apt/sources.list and /etc/apt/sources.list.d)",
                    location=locate(recipe, ("release",)),
                    hint="set 'mirror:' in the recipe to a Debian mirror URL",
                )
            archive_uri = archive.uri
        suites = [release]
        if release not in ROLLING and self.options.get("updates", True):
            suites.append(f"{release}-updates")
        sources = [AptSource(archive_uri, tuple(suites), components, origin="archive")]
        security = host.security()
        if release not in ROLLING and self.options.get("security", True) and security:
            sources.append(
                AptSource(security.uri, (f"{release}-security",), components, origin="security")
            )
        return sources

    def describe_sources(self) -> list[str]:
        lines = [line for source in self.sources for line in source.lines()]
        for repo in self.recipe.repositories:
            lines += [
                f"deb {repo.uri} {suite} {' '.join(repo.components)}" for suite in repo.suites
            ]
        return lines

    def mirror_state(self) -> dict[str, dict[str, str]]:
        """Digest and date of each suite's InRelease: a mirror update changes the keys."""
        return dict(self._mirror_state)

    @cached_property
    def _mirror_state(self) -> dict[str, dict[str, str]]:
        state: dict[str, dict[str, str]] = {}
        suites = [(s.uri, suite) for s in self.sources for suite in s.suites]
        suites += [
            (r.uri.rstrip("/"), suite) for r in self.recipe.repositories for suite in r.suites
        ]
        for uri, suite in suites:
            state[f"{uri} {suite}"] = _fetch_release_state(uri, suite)
        return state

    # -- plan inputs ---------------------------------------------------------------------

    @property
    def variant(self) -> str:
        return str(self.options.get("variant") or "minbase")

    def bootstrap_inputs(self) -> dict[str, Any]:
        return {
            "release": self.recipe.release,
            "arch": str(self.arch),
            "variant": self.variant,
            "sources": self.describe_sources(),
            "mirror_state": self.mirror_state(),
            "mmdebstrap": self._mmdebstrap_version,
        }

    @cached_property
    def _mmdebstrap_version(self) -> str:
        if not runner.exists("mmdebstrap"):
            return "missing"
        return runner.output(["mmdebstrap", "--version"]).strip()

    def kernel_packages(self) -> list[str]:
        kernel = self.recipe.kernel
        if kernel == "none":
            return []
        flavour = "generic" if kernel == "server" else kernel
        if flavour in ("cloud", "generic"):
            package = _flavour_package(flavour, Arch(self.arch))
            if package is None:
                raise RecipeError(
                    f"Debian has no '{kernel}' kernel for {self.arch}",
                    location=locate(self.recipe, ("kernel",)),
                    hint="use kernel: generic, or name a kernel package",
                )
            return [package]
        return [kernel]

    def bootloader_packages(self, firmware: list[Any]) -> list[str]:
        arch = Arch(self.arch)
        efi = "ia32" if arch == Arch.I386 else arch.info.debian
        packages: list[str] = []
        names = {str(f) for f in firmware}
        if "bios" in names:
            packages.append("grub-pc-bin")
        if names & {"uefi", "uefi-secureboot"}:
            if arch not in GRUB_EFI_ARCHES:
                raise DistroError(
                    f"Debian has no UEFI GRUB for {arch}", location=locate(self.recipe, ("boot",))
                )
            packages.append(f"grub-efi-{efi}-bin")
        if "uefi-secureboot" in names:
            packages += ["shim-signed", f"grub-efi-{efi}-signed"]
        return packages

    def filesystem_packages(self, filesystems: list[str]) -> list[str]:
        # ext4's e2fsprogs is in every Debian base system; vfat needs no tool to mount.
        # lvm2 brings its initramfs hook: a root on LVM is activated there.
        # cryptsetup-initramfs unlocks an encrypted root in the initramfs.
        tools = {
            "btrfs": ["btrfs-progs"],
            "xfs": ["xfsprogs"],
            "lvm": ["lvm2"],
            "luks": ["cryptsetup", "cryptsetup-initramfs"],
        }
        return list(dict.fromkeys(p for fs in filesystems for p in tools.get(fs, [])))

    def tool_environment(self, options: OptionValues) -> dict[str, str]:
        env = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
        proxy = apt_proxy(options)
        return (env | {"OSBAKE_APT_PROXY": proxy}) if proxy else env

    def tree_environment(self, ctx: Work) -> dict[str, str]:
        """The tools' environment with the build's epoch: mkinitramfs and other Debian
        tools date what they make SOURCE_DATE_EPOCH (reproducible initramfs)."""
        return self.tool_environment(ctx.options) | {"SOURCE_DATE_EPOCH": str(ctx.epoch)}

    def script_environment(self) -> dict[str, str]:
        return {
            "OSBAKE_DEBIAN_SUITES": " ".join(
                suite for source in self.sources for suite in source.suites
            )
        }

    # -- steps ---------------------------------------------------------------------------

    def bootstrap(self, ctx: Work) -> None:
        cache = ctx.packages
        cache.mkdir(parents=True, exist_ok=True)
        argv: list[str] = [
            "mmdebstrap",
            "--mode=root",
            "--format=directory",
            f"--variant={self.variant}",
            f"--arch={self.arch}",
            "--skip=essential/unlink",
            "--skip=cleanup/apt/lists",
            '--aptopt=Acquire::Languages "none"',
            '--aptopt=Acquire::Retries "3"',
            f'--setup-hook=mkdir -p "$1{APT_ARCHIVES}" && '
            f'mount --bind {shlex.quote(str(cache))} "$1{APT_ARCHIVES}"',
            f'--customize-hook=umount "$1{APT_ARCHIVES}"',
            *self._bootstrap_includes(),
            *self._bootstrap_host_programs(ctx),
            self.recipe.release,
            str(ctx.tree),
            *[line for source in self.sources for line in source.lines()],
        ]
        # apt reads the proxy from the environment too; as an --aptopt it would stay in
        # the image's apt configuration.
        proxy = apt_proxy(ctx.options)
        env = {"http_proxy": proxy} if proxy else {}
        if self._emulated() and host_programs.enabled():
            # mmdebstrap passes its PATH on to what it runs in the tree.
            env["PATH"] = f"{host_programs.INSIDE}/bin:{os.environ.get('PATH', '')}"
        ctx.tree.parent.mkdir(parents=True, exist_ok=True)
        runner.run(
            argv,
            events=ctx.events,
            env=env,
            hint="check the mirror and the release name; run with -v for apt's output",
        )
        # Keep services from starting while packages are installed in later steps.
        sandbox.run_in_tree(
            ctx.tree,
            ["sh", "-c", POLICY_RC_D + " && " + DIVERT_INITRAMFS],
            events=ctx.events,
            env=self.tree_environment(ctx),
        )
        self._add_repositories(ctx)

    def _bootstrap_includes(self) -> list[str]:
        # By default mmdebstrap merges /usr by installing usrmerge, which pulls in
        # perl (50 MB). Its merged-usr hooks make the links themselves and install
        # usr-is-merged instead, as debootstrap does.
        hooks = Path("/usr/share/mmdebstrap/hooks/merged-usr")
        if self.recipe.release in PRE_USRMERGE or not hooks.is_dir():
            return []
        return [f"--hook-dir={hooks}"]

    def _bootstrap_host_programs(self, ctx: Work) -> list[str]:
        """For another architecture, the hooks that give the essential packages' dpkg
        the host's programs (host_programs.bootstrap_hook), then take them away."""
        if not (self._emulated() and host_programs.enabled()):
            return []
        inside = f'"$1{host_programs.INSIDE}"'
        # apt sets dpkg's PATH from DPkg::Path for the packages after the essential
        # ones; mmdebstrap also writes the option into the tree, where it is dropped.
        settings = f'"$1{MMDEBSTRAP_SETTINGS}"'
        return [
            f'--aptopt=DPkg::Path "{host_programs.SEARCH_PATH}"',
            f"--extract-hook={shlex.quote(sys.executable)} -m osbake.distros.host_programs "
            f'"$1" {shlex.quote(str(ctx.workdir))}',
            f"--customize-hook=sed -i '/^DPkg::Path /d' {settings} && "
            f"if [ -d {inside} ]; then umount -R {inside} && "
            f'rmdir {inside} "$1{sandbox.RUN_DIR}"; fi',
        ]

    def _emulated(self) -> bool:
        """Whether the tree's programs run under emulation on this host."""
        return binfmt.needs_emulation(Arch(self.arch), binfmt.host_arch())

    def _add_repositories(self, ctx: Work) -> None:
        """The recipe's extra repositories, as deb822 sources with their own keyrings."""
        if not self.recipe.repositories:
            return
        staged = ctx.workdir / "repositories"
        staged.mkdir(parents=True, exist_ok=True)
        keyrings = _repository_keyrings(ctx, self.recipe)
        commands = ["mkdir -p /etc/apt/keyrings /etc/apt/sources.list.d"]
        for repo in self.recipe.repositories:
            stanza = [
                "Types: deb",
                f"URIs: {repo.uri}",
                f"Suites: {' '.join(repo.suites)}",
                f"Components: {' '.join(repo.components)}",
            ]
            if repo.name in keyrings:
                (staged / f"{repo.name}.gpg").write_bytes(keyrings[repo.name].read_bytes())
                commands.append(
                    f"install -m 0644 /run/osbake/repos/{repo.name}.gpg /etc/apt/keyrings/"
                )
                stanza.append(f"Signed-By: /etc/apt/keyrings/{repo.name}.gpg")
            (staged / f"{repo.name}.sources").write_text("\n".join(stanza) + "\n")
            commands.append(
                f"install -m 0644 /run/osbake/repos/{repo.name}.sources /etc/apt/sources.list.d/"
            )
        sandbox.run_in_tree(
            ctx.tree,
            ["sh", "-ec", " && ".join(commands)],
            binds=[sandbox.Bind(staged, "/run/osbake/repos")],
            events=ctx.events,
            network=False,
            env=self.tree_environment(ctx),
        )

    def install_packages(self, ctx: Work, packages: list[str]) -> None:
        if not packages:
            return
        recommends = "true" if ctx.options.get("packages", {}).get("recommends") else "false"
        apt = [
            "apt-get",
            "-q",
            "-y",
            "-o",
            f"APT::Install-Recommends={recommends}",
            "-o",
            "Dpkg::Use-Pty=0",
        ]
        cache = ctx.packages
        cache.mkdir(parents=True, exist_ok=True)
        binds = [sandbox.Bind(cache, APT_ARCHIVES, writable=True)]
        env = self.tree_environment(ctx)
        hint = "check the package names (apt-cache policy NAME on a Debian machine) and the mirror"
        script = f"{shlex.join(apt)} update --error-on=any && "
        native = None
        if self._emulated() and host_programs.enabled():
            # The host's programs of the versions the tree will have: apt says which
            # packages it is about to install (a simulation) before they are staged.
            planned = sandbox.run_in_tree(
                ctx.tree,
                ["sh", "-c", f"{script}{shlex.join(apt)} -s install {shlex.join(packages)}"],
                events=ctx.events,
                binds=binds,
                env=env,
                capture=True,
                hint=hint,
            )
            script = ""
            native = host_programs.prepare(
                ctx.tree, ctx.workdir, ctx.events, planned=apt_installs(planned.text)
            )
        if native is not None:  # first on PATH: dpkg may replace the tree's own
            binds += native.binds()
            env |= native.path()
            apt += native.apt_options()
        sandbox.run_in_tree(
            ctx.tree,
            ["sh", "-c", f"{script}{shlex.join(apt)} install {shlex.join(packages)}"],
            events=ctx.events,
            binds=binds,
            env=env,
            hint=hint,
        )

    def prepare_boot(self, ctx: Work) -> None:
        """Make the initramfs once, now that every package is installed.

        update-initramfs was diverted to a stub at the bootstrap: installing a kernel
        and then packages with initramfs hooks would otherwise make it again and again.
        After this, it is the real one again: a package installed later (a run: line,
        a post-install script) remakes the initramfs as on any Debian system.
        """
        # Another architecture's programs run emulated: its compressor runs on the host,
        # and so do the programs mkinitramfs starts per module where the host has them.
        deferred = None
        binds: list[sandbox.Bind] = []
        if self._emulated():
            deferred = host_initramfs.prepare(ctx.tree, ctx.workdir)
            # Only where the host gets the archive, which is checked before it is used.
            native = host_programs.prepare(ctx.tree, ctx.workdir, ctx.events) if deferred else None
            binds += deferred.binds() if deferred else []
            binds += native.for_mkinitramfs(ctx.tree) if native else []
        sandbox.run_in_tree(
            ctx.tree,
            ["sh", "-ec", RESTORE_INITRAMFS],
            events=ctx.events,
            network=False,
            env=self.tree_environment(ctx),
            binds=binds,
        )
        if deferred is not None:
            host_programs.check_archives(deferred.folder)
            host_initramfs.finish(deferred, ctx.tree, ctx.events)

    def finish(self, ctx: Work) -> None:
        # The build's policy-rc.d and apt settings go; so does the host's resolver that
        # mmdebstrap copied in (a symlink, e.g. to systemd-resolved, is the image's own);
        # and the logs and caches that record when the build ran (BUILD_RECORDS), so
        # that two builds of one recipe from one mirror state give the same bytes.
        sandbox.run_in_tree(
            ctx.tree,
            [
                "sh",
                "-c",
                f"rm -f /usr/sbin/policy-rc.d {MMDEBSTRAP_SETTINGS}; "
                "[ -L /etc/resolv.conf ] || rm -f /etc/resolv.conf; "
                f"rm -f {' '.join(BUILD_RECORDS)}",
            ],
            events=ctx.events,
            network=False,
            resolver=False,
            env=self.tree_environment(ctx),
        )
        # The sandbox mounts a /dev of its own over the tree's: the folder's time is what
        # mmdebstrap left, which differs between a root and a rootless bootstrap.
        if (ctx.tree / "dev").is_dir():
            os.utime(ctx.tree / "dev", (ctx.epoch, ctx.epoch), follow_symlinks=False)

    def installed_packages(self, tree: Path) -> list[Package]:
        text = runner.output(
            ["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "-W", f"--showformat={DPKG_FORMAT}"]
        )
        packages = []
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) != 5:
                continue
            name, version, arch, source, source_version = parts
            packages.append(Package(name, version, arch, source or name, source_version or version))
        return sorted(packages, key=lambda p: (p.name, p.arch))

    def bill_of_materials(
        self, tree: Path, manifest: Manifest, packages: Path
    ) -> list[Installed] | None:
        debs = {p.name: p for p in packages.glob("*.deb")} if packages.is_dir() else {}
        return read_debian_tree(tree, manifest, debs)

    def kernel_footprint(self, tree: Path) -> dict[str, Any] | None:
        footprint = kernels.measure(tree, self.recipe.kernel)
        if footprint is None:
            return None
        owner = _kernel_package(tree, footprint.release)
        if owner is not None:
            footprint.package = owner
            for package in self.installed_packages(tree):
                if package.name == owner:
                    footprint.version = package.version
        return footprint.to_dict()


def _kernel_package(tree: Path, release: str) -> str | None:
    """The package that installed /boot/vmlinuz-<release> (from dpkg's file lists)."""
    info = tree / "var/lib/dpkg/info"
    wanted = f"/boot/vmlinuz-{release}"
    likely = [f"linux-image-{release}", f"linux-image-{release}-unsigned"]
    lists = [info / f"{name}.list" for name in likely]
    lists += sorted(info.glob("linux-image-*.list")) if info.is_dir() else []
    for path in lists:
        if path.is_file() and wanted in path.read_text(errors="replace").splitlines():
            return path.name.removesuffix(".list").split(":")[0]
    return None


STUB = "/usr/sbin/update-initramfs"
DIVERT_INITRAMFS = (
    f"dpkg-divert --quiet --local --rename --divert {STUB}.osbake --add {STUB} && "
    f"printf '#!/bin/sh\\necho \"osbake: update-initramfs $*: later, once\"\\n' > {STUB} && "
    f"chmod 755 {STUB}"
)
# Undo the diversion and make each kernel's initramfs, once (at the end of `install`).
RESTORE_INITRAMFS = f"""
if dpkg-divert --listpackage {STUB} | grep -qx LOCAL; then
    rm -f {STUB}
    dpkg-divert --quiet --local --rename --remove {STUB}
    if [ -x {STUB} ]; then
        for kernel in /boot/vmlinuz-*; do
            [ -e "$kernel" ] || continue
            update-initramfs -c -k "${{kernel#/boot/vmlinuz-}}"
        done
    fi
fi
"""

POLICY_RC_D = (
    "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"
)


def _flavour_package(flavour: str, arch: Arch) -> str | None:
    if flavour == "cloud":
        return f"linux-image-cloud-{arch.info.debian}" if arch in CLOUD_KERNEL_ARCHES else None
    return f"linux-image-{GENERIC_KERNEL_FLAVOURS.get(arch, arch.info.debian)}"


def apt_proxy(options: OptionValues) -> str | None:
    """The apt proxy to use while building (only with the apt-proxy element)."""
    if "apt-proxy" not in options:
        return None
    configured = options["apt-proxy"].get("proxy")
    if configured:
        return str(configured)
    return host_apt_proxy()


@cache
def host_apt_proxy() -> str | None:
    """The host's apt HTTP proxy (Acquire::http::Proxy), if it has one."""
    if not runner.exists("apt-config"):
        return None
    text = runner.output(["apt-config", "dump", "Acquire::http::Proxy"])
    for line in text.splitlines():
        if line.startswith("Acquire::http::Proxy "):
            value = line.split(" ", 1)[1].strip().rstrip(";").strip('"')
            if value and value.upper() != "DIRECT" and value != "false":
                return value
    return None


def _repository_keyrings(ctx: Work, recipe: Recipe) -> dict[str, Path]:
    keyrings: dict[str, Path] = {}
    for index, repo in enumerate(recipe.repositories):
        if repo.key is None:
            continue
        keyrings[repo.name] = _keyring(ctx, recipe, index, repo.name, repo.key)
    return keyrings


def _keyring(ctx: Work, recipe: Recipe, index: int, name: str, key: str) -> Path:
    """A repository's keyring, read without following symlinks out of the recipe's
    folder (the folder may have changed since the recipe was loaded), dearmored."""
    where = ("repositories", index, "key")
    try:
        data = read_source(source_folder(recipe, where), key, KEY_LIMIT)
    except FormatError as exc:
        raise RecipeError(exc.message, location=locate(recipe, where), hint=exc.hint) from None
    folder = ctx.workdir / "keyrings"
    folder.mkdir(parents=True, exist_ok=True)
    if b"-----BEGIN PGP PUBLIC KEY BLOCK-----" not in data:
        out = folder / f"{name}.gpg"
        out.write_bytes(data)
        return out
    armored = folder / f"{name}.asc"
    armored.write_bytes(data)
    out = folder / f"{name}.gpg"
    runner.run(
        ["gpg", "--batch", "--yes", "--dearmor", "-o", str(out), str(armored)], events=ctx.events
    )
    return out


def _fetch_release_state(uri: str, suite: str) -> dict[str, str]:
    errors = []
    for name in ("InRelease", "Release"):
        url = f"{uri}/dists/{suite}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=MIRROR_TIMEOUT) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        # The signed Release file lists the digest of every index, so its own digest
        # changes whenever any package on the mirror does.
        head = data[:8192].decode("utf-8", errors="replace")
        match = re.search(r"^Date: (.+)$", head, re.MULTILINE)
        return {
            "sha256": hashlib.sha256(data).hexdigest(),
            "date": match.group(1).strip() if match else "",
        }
    raise DistroError(
        f"cannot read the release file of '{suite}' from {uri}: {'; '.join(errors)}",
        hint="check the network and the mirror (the 'mirror:' key, or the host's apt "
        "sources); is the release name right?",
    )
