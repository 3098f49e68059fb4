from osbake.recipe.schema import recipe_schema


def test_schema_has_the_core_keys_and_variants() -> None:
    schema = recipe_schema()
    for key in (
        "name",
        "distro",
        "release",
        "arch",
        "elements",
        "packages",
        "kernel",
        "boot",
        "disk",
        "files",
        "run",
        "outputs",
        "variants",
    ):
        assert key in schema["properties"], key
    variant = schema["properties"]["variants"]["additionalProperties"]
    assert "name" not in variant["properties"]
    assert "packages" in variant["properties"]
    assert schema["required"] == ["name"]
