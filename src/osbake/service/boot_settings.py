"""How the worker's boot test boots a configuration's builds: the datasource that gives
the guest its instance, and the hardware it is booted on.

The names are `osbake boot`'s own (`--datasource`, `--hardware`), taken from the
modules that define them, so the console accepts exactly what the boot takes. The
defaults are the boot test as it always was: no instance data, QEMU's virtio devices,
and no option added to the command line.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, ValidationError

from osbake.errors import Location, UsageError
from osbake.firstboot.metadata import Datasource
from osbake.service.models import Configuration
from osbake.vm.hardware import HARDWARE_CHOICES, Platform

DEFAULT_DATASOURCE = Datasource.NONE
DEFAULT_HARDWARE = str(Platform.KVM)  # what `osbake boot` presents without --hardware
DATASOURCES = [str(d) for d in Datasource]
# Seconds a boot with a datasource may take to cloud-init done: under TCG that is half a
# minute or more after the login prompt, whose boot keeps `osbake boot`'s 300.
CLOUD_INIT_TIMEOUT = 600
HARDWARE = list(HARDWARE_CHOICES)


def _known_hardware(value: str) -> str:
    if value not in HARDWARE:
        raise ValueError(
            f"'{value[:40]}' is not a hardware profile; give one of {', '.join(HARDWARE)}"
        )
    return value


class BootSettings(BaseModel):
    """A configuration's boot test (PUT /api/configurations/{name}/boot-test)."""

    model_config = ConfigDict(extra="forbid")

    datasource: Datasource = Field(
        DEFAULT_DATASOURCE,
        description="how the guest gets its instance: a NoCloud or ConfigDrive seed, an EC2 "
        "or OpenStack metadata service at 169.254.169.254, or none (no instance data: the "
        "boot test waits for the login prompt). With a datasource the boot test passes when "
        "cloud-init finishes with it",
    )
    hardware: Annotated[str, AfterValidator(_known_hardware)] = Field(
        DEFAULT_HARDWARE,
        max_length=16,
        json_schema_extra={"enum": list[JsonValue](HARDWARE)},
        description="the devices the image is booted on: kvm (virtio), vmware (vmxnet3, "
        "pvscsi), hyperv (tulip, ide), or target: the platform each image's format is made "
        "for (vmdk: vmware, vhd/vhdx: hyperv, else kvm)",
    )


def from_form(datasource: str, hardware: str) -> BootSettings:
    """The settings a web form sent; UsageError naming the field otherwise."""
    try:
        return BootSettings.model_validate({"datasource": datasource, "hardware": hardware})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error.get("loc", ()))
        known = DATASOURCES if field == "datasource" else HARDWARE
        raise UsageError(
            f"the boot test's {field} is not one osbake knows",
            location=Location(key=field),
            hint=f"give one of {', '.join(known)}",
        ) from None


def apply(configuration: Configuration, settings: BootSettings) -> None:
    configuration.boot_datasource = str(settings.datasource)
    configuration.boot_hardware = settings.hardware


def boot_options(datasource: str, hardware: str) -> list[str]:
    """The `osbake boot` options of these settings (none for the defaults)."""
    options: list[str] = []
    if datasource != DEFAULT_DATASOURCE:
        options += ["--datasource", str(Datasource(datasource))]
        options += ["--timeout", str(CLOUD_INIT_TIMEOUT)]
    if hardware != DEFAULT_HARDWARE:
        options += ["--hardware", _known_hardware(hardware)]
    return options


def cloud_init_done(datasource: str) -> str | None:
    """The console line that proves cloud-init finished with this datasource (None: none)."""
    kind = Datasource(datasource)
    if kind is Datasource.NONE:
        return None
    # e.g. "Cloud-init v. 22.4.2 finished at ... Datasource DataSourceEc2Local.  Up 41 s"
    return rf"Cloud-init v\. \S+ finished at .* Datasource DataSource{kind.cloud_init_name}"


def describe(datasource: str, hardware: str) -> str:
    return f"datasource {datasource}, hardware {hardware}"
