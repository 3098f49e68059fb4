"""What `osbake boot --datasource` gives the guest: a seed, a metadata service, or nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from osbake.arch import Arch
from osbake.errors import UsageError
from osbake.events import Events
from osbake.firstboot.metadata import Datasource, MetadataService
from osbake.firstboot.seed import SeedFormat, Source, seed_content
from osbake.firstboot.volume import write_volume


@dataclass
class Inputs:
    """The instance, as `osbake seed` takes it."""

    hostname: str | None = None
    user: str | None = None
    ssh_keys: Sequence[Source] = ()
    user_data: Source | None = None
    vendor_data: Source | None = None
    instance_id: str | None = None

    def given(self) -> bool:
        return any(
            (self.hostname, self.user, self.ssh_keys, self.user_data, self.vendor_data)
        ) or bool(self.instance_id)


@dataclass
class BootSource:
    """What the boot attaches: a seed to attach, options for QEMU."""

    datasource: Datasource
    seed: Path | None = None
    user_net: list[str] = field(default_factory=list)
    qemu_args: list[str] = field(default_factory=list)
    service: MetadataService | None = None


def prepare(
    datasource: Datasource | str,
    inputs: Inputs,
    workdir: Path,
    stack: contextlib.ExitStack,
    *,
    imdsv2: bool = True,
    arch: Arch = Arch.AMD64,
    events: Events | None = None,
) -> BootSource:
    """Make the seed (nocloud, configdrive) in `workdir`, or start the metadata service
    (ec2, openstack) on `stack`, which stops it when the boot is over."""
    kind = Datasource(datasource)
    if kind is Datasource.NONE:
        if inputs.given():
            raise UsageError(
                "--datasource none gives the guest no instance data, so --hostname, "
                "--user, --ssh-key, --user-data, --vendor-data and --instance-id do not apply",
                hint="pick a datasource (nocloud, configdrive, ec2, openstack) or drop them",
            )
        return BootSource(kind)
    fmt = SeedFormat.NOCLOUD_ISO if kind is Datasource.NOCLOUD else SeedFormat.CONFIGDRIVE
    content = seed_content(
        format=fmt,
        user_data=inputs.user_data,
        vendor_data=inputs.vendor_data,
        hostname=inputs.hostname,
        ssh_keys=inputs.ssh_keys,
        user=inputs.user,
        instance_id=inputs.instance_id,
    )
    if not kind.served:
        seed = write_volume(content, workdir / f"seed-{kind}.iso", events=events)
        return BootSource(kind, seed=seed)
    service = stack.enter_context(MetadataService(kind, content, imdsv2=imdsv2, arch=arch))
    return BootSource(
        kind, user_net=service.qemu_user_net(), qemu_args=service.qemu_args(), service=service
    )
