"""The recipe: the typed model of what users write.

This is the user-facing contract (docs/recipe.md documents it, `osbake schema`
exports it). Models forbid unknown keys so a typo is an error, not a silent
no-op.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from osbake.recipe.yamlpos import Positions

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


class Arch(StrEnum):
    """Debian architecture names."""

    AMD64 = "amd64"
    ARM64 = "arm64"
    ARMHF = "armhf"
    I386 = "i386"
    PPC64EL = "ppc64el"
    RISCV64 = "riscv64"
    S390X = "s390x"


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    UEFI_SECUREBOOT = "uefi-secureboot"


class OutputFormat(StrEnum):
    """Every output format a recipe may ask for; each has a plugin in osbake.outputs."""

    TAR = "tar"
    TAR_ZST = "tar.zst"
    TAR_XZ = "tar.xz"
    OCI = "oci"
    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VHD = "vhd"
    VHDX = "vhdx"
    RAW_TAR_XZ = "raw.tar.xz"
    RAW_TAR_GZ = "raw.tar.gz"


class PartitionTable(StrEnum):
    GPT = "gpt"
    MBR = "mbr"


class PartitionType(StrEnum):
    ESP = "esp"
    BIOS_GRUB = "bios-grub"
    LINUX = "linux"
    SWAP = "swap"
    XBOOTLDR = "xbootldr"
    HOME = "home"
    VAR = "var"
    SRV = "srv"
    TMP = "tmp"
    USR = "usr"


class FsType(StrEnum):
    EXT4 = "ext4"
    VFAT = "vfat"
    BTRFS = "btrfs"
    XFS = "xfs"
    SWAP = "swap"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class FileSpec(Strict):
    """A file from the recipe's folder copied into the image."""

    src: str = Field(description="path relative to the recipe file")
    dest: str = Field(description="absolute path inside the image")
    mode: str | None = Field(
        None,
        description='octal permissions as a quoted string, e.g. "0755"; by default 0644 for '
        "a file, and a folder's own modes are kept",
    )
    owner: str = Field("root", description="user name or numeric id inside the image")
    group: str = Field("root", description="group name or numeric id inside the image")

    @field_validator("dest")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "/../" in value + "/":
            raise ValueError(
                "must be an absolute path inside the image without '..', e.g. /etc/motd"
            )
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        if value is not None and (
            not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value)
        ):
            raise ValueError(
                'must be an octal mode in quotes, e.g. mode: "0644" '
                "(unquoted, YAML reads 0644 as a number)"
            )
        return value


class Repository(Strict):
    """An extra apt repository."""

    name: str = Field(pattern=NAME_PATTERN, description="name of its sources file")
    uri: str
    suites: list[str] = Field(min_length=1)
    components: list[str] = Field(default_factory=lambda: ["main"])
    key: str | None = Field(
        None,
        description="keyring file (binary or armored) "
        "relative to the recipe; without it apt's default keys apply",
    )


class Partition(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    type: PartitionType = PartitionType.LINUX
    size: str = Field(description="e.g. 512MiB, 2GiB, 25%, or rest")
    fs: FsType | None = None
    mount: str | None = Field(None, description="mount point inside the image")
    label: str | None = None
    options: str | None = Field(None, description="mount options for fstab")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        if value == "rest" or re.fullmatch(r"\d+(\.\d+)?%", value) or SIZE_PATTERN.match(value):
            return value
        raise ValueError("must be a size like 512MiB or 2GiB, a percentage like 25%, or rest")

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path, e.g. /boot/efi")
        return value


class Disk(Strict):
    table: PartitionTable = PartitionTable.GPT
    size: str = Field("auto", description="auto (contents + free), or a size like 4GiB")
    free: str = Field(
        "256MiB", description="free space left in the root filesystem when size is auto"
    )
    alignment: str = Field("1MiB", description="partition start alignment")
    sector_size: int = Field(512, description="logical sector size: 512 or 4096")
    partitions: list[Partition] = Field(default_factory=list)

    @field_validator("size", "free", "alignment")
    @classmethod
    def _size(cls, value: str) -> str:
        if value == "auto" or SIZE_PATTERN.match(value):
            return value
        raise ValueError("must be a size like 4GiB (or auto for the disk size)")

    @field_validator("sector_size")
    @classmethod
    def _sector(cls, value: int) -> int:
        if value not in (512, 4096):
            raise ValueError("must be 512 or 4096")
        return value


ElementName = Annotated[str, Field(pattern=r"^-?[a-z0-9][a-z0-9._-]*$")]
PackageName = Annotated[str, Field(pattern=r"^-?[a-z0-9][a-z0-9+.:=~-]*$")]

# Keys whose lists a variant or an extending recipe adds to (the rest replace).
ADDITIVE_KEYS = ("elements", "packages", "files", "run", "repositories")
# Keys whose mappings are merged key by key.
MERGED_KEYS = ("options", "output_options", "variants")
# Keys only the top of a recipe may have.
TOP_ONLY_KEYS = ("name", "variants", "extends")


class Recipe(Strict):
    """An image recipe: what to build, from what, into which outputs."""

    name: str = Field(pattern=NAME_PATTERN, description="image name; names the artifacts")
    description: str = ""
    extends: str | list[str] | None = Field(
        None, description="recipe file(s), relative to this one, that this one builds on"
    )
    distro: str = Field("debian", description="distribution plugin")
    release: str = Field("bookworm", description="distribution release (codename)")
    arch: list[Arch] = Field(default_factory=lambda: [Arch.AMD64], min_length=1)
    mirror: str | None = Field(
        None, description="package mirror; the default comes from the host's apt sources"
    )
    components: list[str] = Field(default_factory=lambda: ["main"])
    repositories: list[Repository] = Field(default_factory=list)
    elements: list[ElementName] = Field(default_factory=list)
    packages: list[PackageName] = Field(default_factory=list)
    kernel: str = Field("none", description="cloud | generic | server | none | a package name")
    cmdline: str | None = Field(None, description="kernel command line (elements add to it)")
    boot: list[Firmware] = Field(default_factory=list)
    disk: Disk | None = None
    files: list[FileSpec] = Field(default_factory=list)
    run: list[str] = Field(default_factory=list, description="shell commands run in the image")
    outputs: list[OutputFormat] = Field(default_factory=lambda: [OutputFormat.TAR], min_length=1)
    output_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="settings of output formats, e.g. {qcow2: {compression: zlib}}",
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="element options: {element: {option: value}}"
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named overlays merged onto this recipe"
    )

    # Where the recipe came from: its file (for relative paths and errors).
    _source: Path | None = PrivateAttr(default=None)
    _positions: Positions = PrivateAttr(default_factory=dict)
    _variant: str | None = PrivateAttr(default=None)

    @field_validator("arch", "boot", "outputs", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("outputs")
    @classmethod
    def _distinct_outputs(cls, value: list[OutputFormat]) -> list[OutputFormat]:
        seen: dict[str, OutputFormat] = {}
        for fmt in value:
            file_kind = "tar.zst" if fmt == OutputFormat.TAR else str(fmt)
            if file_kind in seen:
                raise ValueError(
                    f"lists the same output twice ('{seen[file_kind]}' and '{fmt}'; "
                    "'tar' is the .tar.zst tarball)"
                )
            seen[file_kind] = fmt
        return value

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(
                    f"variant name '{name}' must be lowercase letters, digits, '.', '_' or '-'"
                )
        return value

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def positions(self) -> Positions:
        return self._positions

    @property
    def variant(self) -> str | None:
        """The variant this recipe was merged for, or None for the base."""
        return self._variant

    @property
    def source_dirs(self) -> list[Path]:
        """The folders of this recipe's file and of every file it extends, this one first."""
        folders = [self._source.resolve().parent] if self._source else []
        for location in self._positions.values():
            if location.file is not None and location.file.parent not in folders:
                folders.append(location.file.parent)
        return folders

    @property
    def base_dir(self) -> Path:
        return self._source.parent if self._source else Path.cwd()

    def normalised(self) -> dict[str, Any]:
        """The recipe as plain data with every default filled in (no variants, no extends)."""
        data = self.model_dump(mode="json", exclude={"variants", "extends"})
        return data
