"""Output plugins: one small file per format, registered by subclassing `Output`."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from osbake.errors import OutputError, RecipeError
from osbake.recipe import OutputFormat, Recipe

if TYPE_CHECKING:
    from osbake.context import Context


class Output:
    format: ClassVar[OutputFormat]
    suffix: ClassVar[str]
    # Made from the assembled disk image (else from the tree): the plan puts it after
    # the disk step, and a recipe that asks for it needs a disk layout.
    needs_disk: ClassVar[bool] = False
    # Boots by itself (a live ISO): a build whose other outputs are all made from the
    # tree assembles no disk, even when an element brings a disk layout.
    replaces_disk: ClassVar[bool] = False
    # Modules besides the outputs package whose code shapes the artifact (its key).
    code: ClassVar[tuple[str, ...]] = ()
    registry: ClassVar[dict[OutputFormat, type[Output]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "format" in cls.__dict__:
            Output.registry[cls.format] = cls

    # The settings a recipe may give this format under output_options (none by default).
    settings_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = settings or {}

    def write(self, ctx: Context) -> Path:
        """Write the artifact to ctx.output_path(self.suffix) and return that path."""
        raise NotImplementedError


def _load_plugins() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def get_output(fmt: OutputFormat, settings: dict[str, Any] | None = None) -> Output:
    _load_plugins()
    cls = Output.registry.get(fmt)
    if cls is None:
        raise OutputError(
            f"osbake cannot write '{fmt}' outputs yet",
            hint=f"available: {', '.join(sorted(available()))}",
        )
    return cls(settings)


def needs_disk(fmt: OutputFormat | str) -> bool:
    """Whether the output is made from the disk image, as its plugin declares."""
    _load_plugins()
    try:
        cls = Output.registry.get(OutputFormat(fmt))
    except ValueError:
        return False
    return cls is not None and cls.needs_disk


def output_class(fmt: OutputFormat | str) -> type[Output] | None:
    """The plugin class of a format, or None for a name that is not an output format."""
    _load_plugins()
    try:
        return Output.registry.get(OutputFormat(fmt))
    except ValueError:
        return None


def check_output_options(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """The recipe's output_options, checked against each format's settings (with defaults)."""
    from osbake.recipe import locate

    _load_plugins()
    known = {str(f): cls for f, cls in Output.registry.items()}
    checked: dict[str, dict[str, Any]] = {}
    for name, given in recipe.output_options.items():
        cls = known.get(name)
        if cls is None:
            raise RecipeError(
                f"output_options names '{name}', which is not an output format",
                location=locate(recipe, ("output_options", name)),
                hint=f"formats: {', '.join(sorted(known))}",
            )
        if cls.settings_model is None:
            raise RecipeError(
                f"the output '{name}' has no settings",
                location=locate(recipe, ("output_options", name)),
                hint="remove it from output_options",
            )
        try:
            checked[name] = cls.settings_model.model_validate(given).model_dump(mode="json")
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ("output_options", name, *[str(p) for p in err["loc"]])
            raise RecipeError(
                f"output_options.{name}: {err['msg']}",
                location=locate(recipe, where),
                hint=f"see docs/disk.md#outputs for the settings of {name}",
            ) from None
    for fmt in recipe.outputs:
        cls = Output.registry.get(fmt)
        if cls is not None and cls.settings_model is not None and str(fmt) not in checked:
            checked[str(fmt)] = cls.settings_model().model_dump(mode="json")
    return checked


def available() -> list[str]:
    _load_plugins()
    return [str(f) for f in Output.registry]
