"""The recipe's JSON Schema, exported for editors and documentation."""

from __future__ import annotations

import copy
from typing import Any

from osbake.recipe.model import TOP_ONLY_KEYS, Recipe

SCHEMA_ID = "https://osbake.dev/schema/recipe.json"


def recipe_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    for key in ("arch", "boot", "outputs"):
        # One value may be written without the list: `boot: uefi`.
        listed = schema["properties"][key]
        item = listed.get("items", {})
        schema["properties"][key] = {
            "anyOf": [listed, item],
            "description": listed.get("description", ""),
            "default": listed.get("default"),
        }
    variant: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "description": "An overlay merged onto the recipe (see docs/recipe.md, 'Variants').",
        "properties": {
            key: copy.deepcopy(value)
            for key, value in schema["properties"].items()
            if key not in TOP_ONLY_KEYS
        },
    }
    for key in ("elements", "packages"):
        variant["properties"][key]["description"] = (
            "added to the inherited list; an entry '-name' removes 'name'"
        )
    schema["properties"]["variants"]["additionalProperties"] = variant
    return schema
