"""The recipe: model, loader, schema."""

from osbake.recipe.loader import load, locate, resolve_path, select_variant
from osbake.recipe.model import Arch, Firmware, OutputFormat, Recipe

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
