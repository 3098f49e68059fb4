"""osbake's optional parts: what a command needs that building and booting do not.

`pip install osbake` installs what building, booting, inspecting, seeding and
publishing to a directory need. The build console (`osbake serve`, `osbake
worker`) needs the `console` extra; the Glance and EC2 targets of `osbake sync`
need the `publish` extra (pyproject.toml lists the packages of each). A command
whose extra is missing stops with one message that names the missing module and
how to install it, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from enum import StrEnum

from osbake.errors import HostError


class Extra(StrEnum):
    CONSOLE = "console"
    PUBLISH = "publish"


class MissingExtra(HostError):
    """A Python package of one of osbake's extras is not installed."""


def missing(extra: Extra, what: str, module: str) -> MissingExtra:
    return MissingExtra(
        f"{what} needs the Python module '{module}' (osbake's '{extra}' extra), "
        "which is not installed",
        hint=f"install it: pip install 'osbake[{extra}]'",
    )


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def needs(extra: Extra, what: str, *later: str) -> Iterator[None]:
    """Imports in the block that fail for want of a module outside osbake become one
    MissingExtra naming it. `later`: modules the command imports only later (a
    database or queue driver), checked to be installed without importing them."""
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if not top or top == "osbake":
            raise  # a defect of osbake itself, not a missing extra
        raise missing(extra, what, top) from None
    for module in later:
        if not _present(module):
            raise missing(extra, what, module)
