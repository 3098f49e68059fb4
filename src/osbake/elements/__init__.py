"""Elements: the model, the search path, the resolver, options and the phase runner."""

from osbake.elements.catalog import Catalog, SearchPath
from osbake.elements.model import Element, Phase, Script
from osbake.elements.resolver import Request, resolve

__all__ = ["Catalog", "Element", "Phase", "Request", "Script", "SearchPath", "resolve"]
