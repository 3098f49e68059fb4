"""The recipe: the typed model of what users write.

This is the user-facing contract (docs/recipe.md documents it, `osbake schema`
exports it). Models forbid unknown keys so a typo is an error, not a silent
no-op.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from osbake import formats
from osbake.arch import ARCHITECTURES, Arch, Firmware
from osbake.recipe.yamlpos import Positions

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
NAME_SCHEMA = {"pattern": NAME_PATTERN, "maxLength": 64}
# At most this many variants in one recipe (each is checked whenever it is loaded).
MAX_VARIANTS = 256


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
    ISO = "iso"


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
    LVM = "lvm"


class FsType(StrEnum):
    EXT4 = "ext4"
    VFAT = "vfat"
    BTRFS = "btrfs"
    XFS = "xfs"
    SWAP = "swap"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


ImageName = Annotated[
    str, AfterValidator(lambda v: formats.name(v, "name")), Field(json_schema_extra=NAME_SCHEMA)
]
ElementName = Annotated[
    str,
    AfterValidator(lambda v: _removable(formats.name, v, "element name")),
    Field(json_schema_extra={"pattern": r"^-?[a-z0-9][a-z0-9._-]*$", "maxLength": 65}),
]
PackageSpec = Annotated[
    str,
    AfterValidator(lambda v: _removable(formats.package_spec, v, "package")),
    Field(json_schema_extra={"pattern": r"^-?[a-z0-9][a-z0-9+.-]+([:=/].*)?$"}),
]
Component = Annotated[str, AfterValidator(lambda v: formats.component(v, "component"))]
Suite = Annotated[str, AfterValidator(lambda v: formats.suite(v, "suite"))]
Uri = Annotated[
    str,
    AfterValidator(lambda v: formats.url(v, "URL")),
    Field(json_schema_extra={"format": "uri", "pattern": r"^(https?|ftp|file|copy)://\S+$"}),
]
SourcePath = Annotated[str, AfterValidator(lambda v: formats.relative_path(v, "src"))]
DestPath = Annotated[str, AfterValidator(lambda v: formats.image_path(v, "dest"))]
Owner = Annotated[str, AfterValidator(lambda v: formats.owner(v, "owner"))]
Group = Annotated[str, AfterValidator(lambda v: formats.owner(v, "group"))]
RunLine = Annotated[str, AfterValidator(lambda v: formats.script_line(v, "the command"))]


def _kernel(value: str) -> str:
    if value in ("cloud", "generic", "server", "none"):
        return value
    try:
        return formats.package(value, "kernel")
    except formats.FormatError as exc:
        raise formats.FormatError(
            exc.message, "use cloud, generic, server, none or a kernel package name"
        ) from None


def _removable(check: Callable[[Any, str], str], value: str, what: str) -> str:
    """An entry of elements or packages: a name, or "-name" to remove one."""
    check(value[1:] if value.startswith("-") else value, what)
    return value


class FileSpec(Strict):
    """A file from the recipe's folder copied into the image."""

    src: SourcePath = Field(
        description="path relative to the recipe file that names it; it must stay inside "
        "that file's folder (no absolute path, no '..', no symlink leading out)"
    )
    dest: DestPath = Field(description="absolute, normalised path inside the image")
    mode: str | None = Field(
        None,
        description='octal permissions as a quoted string, e.g. "0755"; by default 0644 for '
        "a file, and a folder's own modes are kept",
    )
    owner: Owner = Field("root", description="user name or numeric id inside the image")
    group: Group = Field("root", description="group name or numeric id inside the image")

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        return None if value is None else formats.file_mode(value, "mode")


class Repository(Strict):
    """An extra apt repository."""

    name: Annotated[
        str,
        AfterValidator(lambda v: formats.name(v, "repository name")),
        Field(json_schema_extra=NAME_SCHEMA),
    ] = Field(description="name of its sources file")
    uri: Uri
    suites: list[Suite] = Field(min_length=1)
    components: list[Component] = Field(default_factory=lambda: ["main"])
    key: SourcePath | None = Field(
        None,
        description="keyring file (binary or armored) "
        "relative to the recipe; without it apt's default keys apply",
    )


def _unit_needed(value: Any, what: str) -> Any:
    """A bare number where a size is expected: say what is wrong with it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise formats.FormatError(f"the {what} {value} is zero", "give a size larger than 0")
        raise formats.FormatError(
            f"the {what} {value} has no unit",
            f'write it with a unit, as a string, e.g. "{value}MiB" or "{value}GiB"',
        )
    return value


def _fs_label(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,16}", value):
        raise formats.FormatError(
            f"the label {formats.shown(value)} is not a valid file system label",
            "use 1 to 16 letters, digits, '.', '_' and '-' (vfat keeps 11, upper-cased)",
        )
    return value


def _mount_options(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_=,.:/@+-]{1,256}", value):
        raise formats.FormatError(
            f"{formats.shown(value)} are not valid mount options",
            "write fstab options separated by commas, without spaces, e.g. "
            "noatime,errors=remount-ro",
        )
    return value


class LuksUnlock(StrEnum):
    PROMPT = "prompt"  # the passphrase is asked on the console at boot
    INITRAMFS = "initramfs"  # the key file is in the initramfs: unattended, not a secret


class Luks(Strict):
    """LUKS2 encryption of a partition or logical volume, made with this key."""

    key_file: Annotated[str, AfterValidator(lambda v: formats.relative_path(v, "key_file"))] = (
        Field(
            description="the key (or passphrase) file, relative to the recipe file and inside "
            "its folder"
        )
    )
    unlock: LuksUnlock = Field(
        LuksUnlock.PROMPT,
        description="prompt: ask for the passphrase at boot; initramfs: put the key file in "
        "the initramfs (unattended: anyone with the image has the key)",
    )


class Partition(Strict):
    name: Annotated[
        str,
        AfterValidator(lambda v: formats.name(v, "partition name", 36)),
        Field(json_schema_extra={**NAME_SCHEMA, "maxLength": 36}),
    ]
    type: PartitionType = PartitionType.LINUX
    size: str = Field(description="e.g. 512MiB, 2GiB, 25%, or rest")
    fs: FsType | None = None
    mount: str | None = Field(None, description="mount point inside the image")
    label: str | None = Field(
        None, description="file system label: 1 to 16 letters, digits, '.', '_', '-'"
    )
    options: str | None = Field(None, description="mount options for fstab")
    vg: str | None = Field(
        None, description="the volume group this partition holds (with type: lvm)"
    )
    luks: Luks | None = Field(None, description="encrypt the file system with LUKS2")

    @field_validator("size", mode="before")
    @classmethod
    def _bare_size(cls, value: Any) -> Any:
        return _unit_needed(value, "partition size")

    @field_validator("vg")
    @classmethod
    def _vg(cls, value: str | None) -> str | None:
        return None if value is None else formats.lvm_name(value, "volume group name", False)

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        if value == "rest":
            return value
        if value.endswith("%"):
            formats.percent(value, "partition size")
        else:
            formats.size_bytes(value, "partition size")
        return value

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str | None) -> str | None:
        return None if value is None else formats.mount_point(value, "mount point")

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return _fs_label(value)

    @field_validator("options")
    @classmethod
    def _options(cls, value: str | None) -> str | None:
        return _mount_options(value)


class LogicalVolume(Strict):
    """A linear logical volume with a file system, like a partition without a type."""

    name: str = Field(description="LVM's rules: letters, digits, '+', '_', '.', '-'")
    size: str = Field(description="e.g. 2GiB, or rest")
    fs: FsType | None = None
    mount: str | None = Field(None, description="mount point inside the image")
    label: str | None = Field(None, description="file system label (as for partitions)")
    options: str | None = Field(None, description="mount options for fstab")
    luks: Luks | None = Field(None, description="encrypt the file system with LUKS2")

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str | None) -> str | None:
        return None if value is None else formats.mount_point(value, "mount point")

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return _fs_label(value)

    @field_validator("options")
    @classmethod
    def _options(cls, value: str | None) -> str | None:
        return _mount_options(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return formats.lvm_name(value, "logical volume name", True)

    @field_validator("size", mode="before")
    @classmethod
    def _bare_size(cls, value: Any) -> Any:
        return _unit_needed(value, "logical volume size")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        if value != "rest":
            formats.size_bytes(value, "logical volume size")
        return value


class VolumeGroup(Strict):
    """An LVM volume group on the partition that names it (type: lvm, vg: NAME)."""

    name: str = Field(description="LVM's rules: letters, digits, '+', '_', '.', '-'")
    extent_size: str = Field("4MiB", description="a power of two, 1MiB to 1GiB")
    volumes: list[LogicalVolume] = Field(default_factory=list, max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return formats.lvm_name(value, "volume group name", False)

    @field_validator("extent_size", mode="before")
    @classmethod
    def _bare_size(cls, value: Any) -> Any:
        return _unit_needed(value, "extent size")

    @field_validator("extent_size")
    @classmethod
    def _extent(cls, value: str) -> str:
        size = formats.size_bytes(value, "extent size", minimum=1024**2, maximum=1024**3)
        if size & (size - 1):
            raise formats.FormatError(
                f"the extent size {value} is not a power of two", "use 4MiB (or 1MiB, 32MiB)"
            )
        return value


MAX_ALIGNMENT = 1024**3


class Disk(Strict):
    table: PartitionTable = PartitionTable.GPT
    size: str = Field(
        "auto",
        description=f"auto (contents + free), or a size like 4GiB (at most "
        f"{formats.MAX_DISK_SIZE // 1024**4} TiB)",
    )
    free: str = Field(
        "256MiB", description="free space left in the root filesystem when size is auto (0 or more)"
    )
    alignment: str = Field("1MiB", description="partition start alignment (512 bytes to 1 GiB)")
    sector_size: int = Field(512, description="logical sector size: 512 or 4096")
    partitions: list[Partition] = Field(default_factory=list, max_length=128)
    volume_groups: list[VolumeGroup] = Field(default_factory=list, max_length=16)

    @field_validator("size", "free", "alignment", mode="before")
    @classmethod
    def _bare_size(cls, value: Any) -> Any:
        if isinstance(value, int) and value == 0 and not isinstance(value, bool):
            return "0"  # checked (and for most, refused) below
        return _unit_needed(value, "size")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        if value != "auto":
            formats.size_bytes(value, "disk size")
        return value

    @field_validator("free")
    @classmethod
    def _free(cls, value: str) -> str:
        formats.size_bytes(value, "free space", minimum=0)
        return value

    @field_validator("alignment")
    @classmethod
    def _alignment(cls, value: str) -> str:
        formats.size_bytes(value, "alignment", minimum=512, maximum=MAX_ALIGNMENT)
        return value

    @field_validator("sector_size")
    @classmethod
    def _sector(cls, value: int) -> int:
        if value not in (512, 4096):
            raise ValueError("must be 512 or 4096")
        return value


# Keys whose lists a variant or an extending recipe adds to (the rest replace).
ADDITIVE_KEYS = ("elements", "packages", "files", "run", "repositories")
# Keys whose mappings are merged key by key.
MERGED_KEYS = ("options", "output_options", "variants")
# Keys only the top of a recipe may have.
TOP_ONLY_KEYS = ("name", "variants", "extends")


class Recipe(Strict):
    """An image recipe: what to build, from what, into which outputs."""

    name: ImageName = Field(description="image name; names the artifacts")
    description: Annotated[str, AfterValidator(lambda v: formats.text(v, "description", 4096))] = ""
    extends: str | list[str] | None = Field(
        None,
        description="recipe file(s), relative to this one, that this one builds on",
    )
    distro: Annotated[str, AfterValidator(lambda v: formats.name(v, "distro"))] = Field(
        "debian", description="distribution plugin"
    )
    release: Annotated[str, AfterValidator(lambda v: formats.codename(v, "release"))] = Field(
        "bookworm", description="distribution release (codename)"
    )
    arch: list[Arch] = Field(
        default_factory=lambda: [Arch.AMD64],
        min_length=1,
        description="Debian architectures to build for (one image each; --arch picks one)",
    )
    mirror: Uri | None = Field(
        None,
        description="package mirror URL (http, https, ftp, file or copy); the default comes "
        "from the host's apt sources",
    )
    components: list[Component] = Field(default_factory=lambda: ["main"])
    repositories: list[Repository] = Field(default_factory=list)
    elements: list[ElementName] = Field(default_factory=list)
    packages: list[PackageSpec] = Field(default_factory=list)
    kernel: Annotated[str, AfterValidator(_kernel)] = Field(
        "none", description="cloud | generic | server | none | a package name"
    )
    cmdline: Annotated[str, AfterValidator(lambda v: formats.cmdline(v, "cmdline"))] | None = Field(
        None,
        description="kernel command line (elements add to it); words of letters, digits "
        f"and ._,:=/+@%~!*^?[]-, at most {formats.MAX_CMDLINE} characters",
    )
    boot: list[Firmware] = Field(
        default_factory=list,
        description="firmwares the image must boot with; each arch has its own: "
        + "; ".join(f"{info.debian}: {info.boot_summary()}" for info in ARCHITECTURES.values()),
    )
    disk: Disk | None = None
    files: list[FileSpec] = Field(default_factory=list)
    run: list[RunLine] = Field(
        default_factory=list, description="shell commands run in the image (no NUL byte)"
    )
    outputs: list[OutputFormat] = Field(default_factory=lambda: [OutputFormat.TAR], min_length=1)
    output_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="settings of output formats, e.g. {qcow2: {compression: zlib}}",
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="element options: {element: {option: value}}"
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=f"named overlays merged onto this recipe (at most {MAX_VARIANTS})",
    )

    # Where the recipe came from: its file (for relative paths and errors).
    _source: Path | None = PrivateAttr(default=None)
    _positions: Positions = PrivateAttr(default_factory=dict)
    _variant: str | None = PrivateAttr(default=None)
    # Set by the loader: the folders of every recipe file, the positions by top-level
    # key, and each variant's own keys, validated (see loader.select_variant).
    _folders: list[Path] = PrivateAttr(default_factory=list)
    _groups: dict[str, Positions] = PrivateAttr(default_factory=dict)
    _overlays: dict[str, tuple[Recipe, Positions]] = PrivateAttr(default_factory=dict)

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

    @field_validator("extends")
    @classmethod
    def _extends(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in [value] if isinstance(value, str) else value or []:
            formats.line(item, "extends")
        return value

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_VARIANTS:
            raise formats.FormatError(
                f"the recipe has {len(value)} variants; the limit is {MAX_VARIANTS}",
                "split the recipe into several files that extend a common one",
            )
        for name in value:
            formats.name(name, "variant name")
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
        if self._folders:
            return list(self._folders)
        return [self._source.resolve().parent] if self._source else []

    @property
    def base_dir(self) -> Path:
        return self._source.parent if self._source else Path.cwd()

    def normalised(self) -> dict[str, Any]:
        """The recipe as plain data with every default filled in (no variants, no extends)."""
        data = self.model_dump(mode="json", exclude={"variants", "extends"})
        return data
