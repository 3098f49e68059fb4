"""The recipe: model, loader, schema."""

from osbake.arch import Arch, Firmware
from osbake.recipe.loader import load, locate, resolve_path, select_variant
from osbake.recipe.model import OutputFormat, Recipe

__all__ = [
    "Arch",
    "Firmware",
    "OutputFormat",
    "Recipe",
    "load",
    "locate",
    "resolve_path",
    "select_variant",
]
