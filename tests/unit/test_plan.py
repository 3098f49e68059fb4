"""Golden tests for plans: recipe in, resolved steps out, compared to a file.

Set OSBAKE_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from osbake.distros.debian import Debian
from osbake.plan import resolve_plan
from osbake.recipe import load
from tests.conftest import EXAMPLES

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True)
def fixed_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    state = {"http://mirror.invalid/debian bookworm": {"sha256": "0" * 64, "date": "d"}}
    monkeypatch.setattr(Debian, "mirror_state", lambda self: dict(state))
    monkeypatch.setattr(Debian, "_mmdebstrap_version", "mmdebstrap 1.3.5", raising=False)
    monkeypatch.setattr(
        Debian, "describe_sources", lambda self: ["deb http://mirror.invalid/debian bookworm main"]
    )


def summary(plan: Any) -> dict[str, Any]:
    return {
        "image": plan.image,
        "elements": [e.name for e in plan.elements],
        "packages": plan.packages,
        "steps": [
            {"name": s.name, "kind": str(s.kind), "describe": s.describe()} for s in plan.steps
        ],
    }


@pytest.mark.parametrize("recipe", ["debian-minimal.yaml", "debian-cloud.yaml"])
def test_plan_matches_golden(recipe: str) -> None:
    plan = resolve_plan(load(EXAMPLES / recipe))
    got = summary(plan)
    golden = GOLDEN / (Path(recipe).stem + ".plan.json")
    if os.environ.get("OSBAKE_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2) + "\n")
    assert got == json.loads(golden.read_text())


def copy_example(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "ex")
    return tmp_path / "ex" / "debian-minimal.yaml"


def keys(path: Path) -> dict[str, str]:
    return {s.name: s.key for s in resolve_plan(load(path)).steps}


def test_keys_are_stable(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    assert keys(path) == keys(path)


def test_changing_a_run_line_changes_only_later_steps(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    before = keys(path)
    path.write_text(path.read_text().replace("built by osbake", "built by osbake!"))
    after = keys(path)
    same = [n for n in before if before[n] == after[n]]
    assert same == ["bootstrap", "root", "pre-install", "packages", "recipe-packages", "install"]


def test_changing_a_file_changes_post_install(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    before = keys(path)
    (path.parent / "files" / "motd").write_text("changed\n")
    after = keys(path)
    assert before["install"] == after["install"]
    assert before["post-install"] != after["post-install"]


def test_adding_a_package_keeps_the_large_install(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    before = keys(path)
    path.write_text(
        path.read_text().replace(
            "packages: [ca-certificates, less]", "packages: [ca-certificates, less, curl]"
        )
    )
    after = keys(path)
    assert before["bootstrap"] == after["bootstrap"]
    assert before["pre-install"] == after["pre-install"]
    # Elements', kernel and bootloader packages stay; only the recipe's own step runs.
    assert before["packages"] == after["packages"]
    assert before["recipe-packages"] != after["recipe-packages"]


def test_a_recipe_package_an_element_wants_is_installed_with_the_elements(
    tmp_path: Path,
) -> None:
    path = copy_example(tmp_path)
    path.write_text(
        path.read_text().replace(
            "packages: [ca-certificates, less]", "packages: [usr-is-merged, less]"
        )
    )
    plan = resolve_plan(load(path))
    assert plan.step("packages").inputs["packages"] == ["usr-is-merged"]
    assert plan.step("recipe-packages").inputs["packages"] == ["less"]


def test_an_element_script_change_invalidates_its_phase(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    elements = path.parent / "elements" / "hello" / "finalise"
    elements.mkdir(parents=True)
    script = elements / "50-hello"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    path.write_text(
        path.read_text().replace(
            "elements: [users, locale, timezone]", "elements: [users, locale, timezone, hello]"
        )
    )
    (path.parent / "elements" / "hello" / "element.yaml").write_text("description: hi\n")
    before = keys(path)
    script.write_text("#!/bin/sh\necho hello again\n")
    after = keys(path)
    assert before["post-install"] == after["post-install"]
    assert before["finalise"] != after["finalise"]


def test_mirror_update_changes_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = copy_example(tmp_path)
    before = keys(path)
    state = {"http://mirror.invalid/debian bookworm": {"sha256": "1" * 64, "date": "d2"}}
    monkeypatch.setattr(Debian, "mirror_state", lambda self: dict(state))
    after = keys(path)
    assert all(before[n] != after[n] for n in before)


def test_variant_and_arch_name_the_image(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: img\narch: [amd64, arm64]\nvariants:\n  ec2: {}\n")
    assert resolve_plan(load(path), "ec2", "arm64").image == "img-ec2-arm64"
    assert resolve_plan(load(path)).image == "img-amd64"


def test_the_serial_console_comes_from_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: img\narch: [amd64, arm64]\nkernel: cloud\nelements: [vm]\n"
        "boot: [uefi]\noutputs: [qcow2]\n"
    )
    pc = resolve_plan(load(path), None, "amd64")
    arm = resolve_plan(load(path), None, "arm64")
    assert pc.cmdline == "console=tty0 console=ttyS0,115200"
    assert arm.cmdline == "console=tty0 console=ttyAMA0,115200"
    assert pc.environment["OSBAKE_CONSOLE"] == "ttyS0"
    assert arm.environment["OSBAKE_CONSOLE"] == "ttyAMA0"
    assert pc.environment["OSBAKE_ARCH"] == "amd64"
    assert arm.environment["OSBAKE_ARCH_MICROCODE"] == ""
    assert pc.environment["OSBAKE_ARCH_MICROCODE"].split() == [
        "amd64-microcode",
        "intel-microcode",
    ]
    assert "linux-image-cloud-arm64" in arm.packages
    assert "grub-efi-arm64-bin" in arm.packages


@pytest.fixture
def code_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """osbake's code, copied: the keys are computed over the copy, which a test edits."""
    import osbake
    from osbake import plan as plan_module

    copy = tmp_path / "code" / "osbake"
    shutil.copytree(Path(osbake.__file__).parent, copy)
    monkeypatch.setattr(plan_module, "CODE_ROOT", copy)
    plan_module._digest.cache_clear()
    yield copy
    plan_module._digest.cache_clear()


def edited_keys(code: Path, recipe: Path, module: str) -> tuple[dict[str, str], dict[str, str]]:
    from osbake import plan as plan_module

    before = keys(recipe)
    source = code / module
    source.write_text(source.read_text() + "\n# an edit\n")
    plan_module._digest.cache_clear()
    return before, keys(recipe)


TREE_STEPS = ["bootstrap", "root", "pre-install", "packages", "recipe-packages", "install"]


@pytest.mark.parametrize("module", ["service/app.py", "publish/tree.py", "cli.py"])
def test_code_a_build_does_not_use_leaves_every_key(
    tmp_path: Path, code_copy: Path, module: str
) -> None:
    recipe = copy_example(tmp_path)
    before, after = edited_keys(code_copy, recipe, module)
    assert set(TREE_STEPS) < set(before)
    assert before == after


def test_a_steps_own_code_changes_its_key_and_the_later_ones(
    tmp_path: Path, code_copy: Path
) -> None:
    recipe = copy_example(tmp_path)
    before, after = edited_keys(code_copy, recipe, "disk/bootloader.py")
    same = [name for name in before if before[name] == after[name]]
    # The bootloader is installed in block-device; the steps before it stay.
    assert same == [
        "bootstrap",
        "root",
        "pre-install",
        "packages",
        "recipe-packages",
        "install",
        "post-install",
    ]


def test_the_distro_plugin_shapes_the_bootstrap(tmp_path: Path, code_copy: Path) -> None:
    recipe = copy_example(tmp_path)
    before, after = edited_keys(code_copy, recipe, "distros/debian.py")
    assert before["bootstrap"] != after["bootstrap"]


def test_keys_come_from_the_declared_actions() -> None:
    from osbake.steps import ACTIONS

    plan = resolve_plan(load(EXAMPLES / "debian-cloud.yaml"))
    assert plan.step("install").actions == ("static-files", "scripts", "initramfs")
    assert plan.step("block-device").actions == ("scripts", "bootloader")
    assert plan.step("finalise").actions == ("scripts", "distro-finish")
    block = plan.step("block-device")
    assert {"disk", "boot", "cmdline", "scripts"} <= set(block.inputs)
    assert "osbake.disk" in block.code and "osbake.service" not in block.code
    assert all(name in ACTIONS for step in plan.steps for name in step.actions)
