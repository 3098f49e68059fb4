"""Output plugins: one small file per format, registered by subclassing `Output`."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from osbake.errors import OutputError
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.build import Context


class Output:
    format: ClassVar[OutputFormat]
    suffix: ClassVar[str]
    needs_disk: ClassVar[bool] = False
    registry: ClassVar[dict[OutputFormat, type[Output]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "format" in cls.__dict__:
            Output.registry[cls.format] = cls

    def write(self, ctx: Context) -> Path:
        """Write the artifact to ctx.output_path(self.suffix) and return that path."""
        raise NotImplementedError


def _load_plugins() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def get_output(fmt: OutputFormat) -> Output:
    _load_plugins()
    cls = Output.registry.get(fmt)
    if cls is None:
        raise OutputError(
            f"osbake cannot write '{fmt}' outputs yet",
            hint=f"available: {', '.join(sorted(available()))}",
        )
    return cls()


def available() -> list[str]:
    _load_plugins()
    return [str(f) for f in Output.registry]
