"""The `osbake` command: parses arguments, calls the library, renders events and errors.

This is the only module (with the service) that prints or decides exit codes.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import shutil
import sys
import traceback
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.markup import escape

import osbake
from osbake import recipe as recipe_mod
from osbake import sandbox
from osbake.errors import Interrupted, OsbakeError, UsageError
from osbake.events import Events, JsonLinesSink, LogFileSink

if TYPE_CHECKING:
    from osbake.manifest import Manifest

Handler = Callable[[argparse.Namespace], int]
CommandFactory = Callable[[str, Handler, str], argparse.ArgumentParser]

# Each area adds its commands from its own module: `register(command, subparsers)`
# where `command(name, handler, help)` returns the new subcommand's parser. Handlers
# return an exit code and raise osbake.errors for failures; main() renders those.
COMMAND_MODULES: list[str] = [
    "osbake.publish.commands",
    "osbake.firstboot.commands",
    "osbake.deploy.commands",
    "osbake.service.commands",
    "osbake.vm.commands",
]


# Exit codes (docs/cli.md): 0 success, 1 a failure (also: standard output was closed
# early, as Rich and Python's own guidance do), 2 bad input or usage, 3 a missing host
# tool, 4 a refused signature or checksum, 70 an unexpected error (a bug in osbake:
# EX_SOFTWARE), 130 interrupted.
EXIT_UNEXPECTED = 70
EXIT_BROKEN_PIPE = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse places positionals only before the first option; a command may name
        # the list that takes the rest (`osbake sync SRC DST --max 1 release=bookworm`).
        dest = getattr(args, "positionals_anywhere", None)
        if dest is None or any(arg.startswith("-") for arg in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, dest, [*getattr(args, dest), *extra])
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    verbose = bool(getattr(args, "debug", False) or getattr(args, "verbose", False))
    code = guarded(lambda: args.handler(args), verbose=verbose)
    return _flush(code)


def guarded(fn: Callable[[], int], *, verbose: bool = False) -> int:
    """Run a command: errors become one paragraph and an exit code, never a traceback
    (unless `verbose`); a reader that closed standard output early ends it quietly."""
    err = Console(stderr=True, highlight=False)
    try:
        return fn()
    except OsbakeError as exc:
        _print_error(err, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        _print_error(err, Interrupted())
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except SystemExit as exc:  # Rich ends a command so when standard output closes
        return exc.code if isinstance(exc.code, int) else 1
    except OSError as exc:
        # A file this user may not read or write, a full disk: the host's state, not a bug.
        if exc.filename is None and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _unexpected(err, exc, verbose)
        if verbose:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename is not None else ""
        _print_error(
            err,
            OsbakeError(
                f"{where}{exc.strerror or type(exc).__name__}",
                hint="check that the path exists, that this user may read and write it, and "
                "that its disk has room; run again with -v to see which step used it",
            ),
        )
        return 1
    except Exception as exc:
        return _unexpected(err, exc, verbose)


def _unexpected(err: Console, exc: Exception, verbose: bool) -> int:
    """A bug in osbake: one paragraph that says so, the traceback only with -v."""
    if verbose:
        traceback.print_exc()
    detail = " ".join(str(exc).split())[:300]
    _print_error(
        err,
        OsbakeError(
            f"osbake failed unexpectedly: {type(exc).__name__}" + (f": {detail}" if detail else ""),
            hint="this is a bug in osbake; run the command again with -v to see where "
            "it happened, and report it with that output"
            if not verbose
            else "this is a bug in osbake; please report it with the traceback above",
        ),
    )
    return EXIT_UNEXPECTED


def _flush(code: int) -> int:
    """Flush standard output now, so a closed pipe is noticed here and not at exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (OSError, ValueError):
        pass
    return code


def _silence_stdout() -> None:
    """Point standard output at /dev/null: Python flushes it again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def printable(text: str) -> str:
    """Text for the terminal: control and format characters (escape sequences, bidi
    overrides) shown as escapes, never sent; newlines and tabs kept."""
    if text.isprintable():
        return text
    return "".join(
        c
        if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs")
        else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in text
    )


def _print_error(console: Console, exc: OsbakeError) -> None:
    try:
        console.print(
            f"[bold red]error:[/] {escape(printable(exc.render()))}",
            soft_wrap=True,
            markup=True,
            highlight=False,
        )
    except BrokenPipeError:
        pass


# -- build -------------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from osbake.plan import check_recipe

    # Validate everything that can be checked offline (every variant's elements and
    # options too) before entering namespaces or touching the cache and output folders.
    base = recipe_mod.load(args.recipe)
    targets = _targets(base, args)
    check_recipe(base)
    verbose = bool(args.verbose or args.debug)
    log = _open_log(Path(args.log)) if args.log else None
    try:
        # Everything else happens in the build's own namespaces (see osbake.sandbox).
        return sandbox.isolate(
            lambda: _flush(guarded(lambda: _run_builds(base, targets, args, log), verbose=verbose))
        )
    finally:
        if log is not None:
            log.close()


def _targets(base: recipe_mod.Recipe, args: argparse.Namespace) -> list[tuple[str | None, str]]:
    if args.all:
        if args.variant or args.arch:
            raise UsageError(
                "--all builds every variant and arch", hint="drop --variant and --arch"
            )
        variants: list[str | None] = [None, *base.variants]
        targets = []
        for variant in variants:
            merged = recipe_mod.select_variant(base, variant)
            targets += [(variant, str(arch)) for arch in merged.arch]
        return targets
    if args.variant:
        recipe_mod.select_variant(base, args.variant)
    return [(args.variant, args.arch or str(recipe_mod.select_variant(base, args.variant).arch[0]))]


def _run_builds(
    base: recipe_mod.Recipe,
    targets: list[tuple[str | None, str]],
    args: argparse.Namespace,
    log: TextIO | None,
) -> int:
    from osbake.build import build
    from osbake.progress import TerminalProgress

    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    outdir = Path(args.output)
    results = []
    try:
        for variant, arch in targets:
            events = Events()
            if args.json:
                events.add(JsonLinesSink(sys.stdout))
            else:
                events.add(TerminalProgress(err, verbose=args.verbose))
            if log is not None:
                events.add(LogFileSink(log))
            result = build(
                base,
                outdir=outdir,
                variant=variant,
                arch=arch,
                events=events,
                use_cache=not args.no_cache,
            )
            results.append(result)
    except OsbakeError as exc:
        _print_error(err, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        _print_error(err, Interrupted())
        return 130
    if not args.json and not getattr(args, "quiet", False):
        for result in results:
            for path in result.artifacts:
                out.print(f"{path}")
            out.print(f"{result.manifest_path}")
    return 0


def _open_log(path: Path) -> TextIO:
    """The --log file, appended to (opened before the build's namespaces, once for every
    target); a path this user cannot write is bad usage."""
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"--log {path}: cannot write it: {exc.strerror or type(exc).__name__}",
            hint="give --log a file in a folder this user may write",
        ) from None


# -- plan, inspect, elements, schema ---------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from osbake.plan import resolve_plan

    base = recipe_mod.load(args.recipe)
    plan = resolve_plan(base, args.variant, args.arch)
    out = Console(highlight=False)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    out.print(
        f"[bold]{plan.image}[/]  {plan.recipe.distro} {plan.recipe.release} {plan.arch}"
        + (f"  variant {plan.variant}" if plan.variant else "")
    )
    out.print("elements: " + ", ".join(e.name for e in plan.elements))
    out.print("packages: " + (" ".join(plan.packages) or "(none)"))
    for step in plan.steps:
        out.print(f"  {step.key[:12]}  {step.name:<14} {step.describe()}", soft_wrap=True)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from osbake.inspect import disk_layout, inspect_artifact

    found = inspect_artifact(Path(args.artifact))
    manifest = found.manifest
    if args.recipe:
        return _print_recipe(found.manifest, found.verified)
    if args.json:
        print(manifest.to_json(), end="")
        return 0 if found.verified is not False else 1
    out = Console(highlight=False)
    out.print(
        f"[bold]{manifest.image}[/]  ({manifest.name}"
        + (f", variant {manifest.variant}" if manifest.variant else "")
        + f", {manifest.distro} {manifest.release} {manifest.arch})"
    )
    out.print(f"manifest:      {found.source}")
    out.print(f"recipe sha256: {manifest.recipe_sha256}")
    if manifest.recipe_file:
        out.print(f"recipe file:   {manifest.recipe_file}")
    out.print(f"osbake:        {manifest.osbake_version}")
    out.print(f"elements:      {', '.join(e.name for e in manifest.elements)}")
    if manifest.build.seconds:
        out.print(
            f"built:         {manifest.build.finished} in {manifest.build.seconds:.0f}s"
            + (" (rootless)" if manifest.build.rootless else "")
        )
    out.print(f"artifact:      {found.artifact.name}  sha256 {found.sha256}")
    if found.verified is True:
        out.print("               [green]matches the manifest[/]")
    elif found.verified is False:
        assert found.entry is not None
        out.print(
            f"               [bold red]DOES NOT match the manifest[/] "
            f"(expected {found.entry.sha256})"
        )
    for artifact in manifest.artifacts:
        if artifact.file != found.artifact.name:
            out.print(f"               also {artifact.file} ({artifact.size} bytes)")
    for line in disk_layout(manifest.disk):
        out.print(line, markup=False)
    out.print(f"packages:      {len(manifest.packages)}")
    if not args.summary:
        width = max((len(p.name) for p in manifest.packages), default=0)
        for package in manifest.packages:
            out.print(f"  {package.name:<{width}}  {package.version}  {package.arch}")
    return 0 if found.verified is not False else 1


def _print_recipe(manifest: Manifest, verified: bool | None) -> int:
    """The recipe that builds the image again, on stdout; what it lacks, on stderr."""
    from osbake import rebuild

    print(rebuild.recipe_text(rebuild.recipe_of(manifest)), end="")
    files, elements = rebuild.outside_recipe(manifest)
    err = Console(stderr=True, highlight=False)
    options = rebuild.build_options(manifest)
    if options:
        err.print(
            f"note: build this image with 'osbake build RECIPE {' '.join(options)}'",
            soft_wrap=True,
        )
    if files:
        err.print(
            "note: the recipe copies files that are not in the image's manifest: "
            + ", ".join(files)
            + "; put them beside the recipe (paths are relative to it), or use "
            "'osbake rebuild IMAGE --source DIR'",
            soft_wrap=True,
        )
    if elements:
        err.print(
            "note: the recipe uses elements of its own: "
            + ", ".join(elements)
            + "; put them in elements/ beside the recipe",
            soft_wrap=True,
        )
    return 0 if verified is not False else 1


def cmd_diff(args: argparse.Namespace) -> int:
    from osbake import diff

    result = diff.diff(diff.read_side(Path(args.old)), diff.read_side(Path(args.new)))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(diff.render(result), end="")
    return 1 if args.exit_code and not result.empty else 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Build an image again from its manifest and say whether the artifacts are the same."""
    import tempfile

    from osbake import diff as diff_mod
    from osbake import rebuild
    from osbake.inspect import inspect_artifact
    from osbake.manifest import load_manifest, manifest_path
    from osbake.plan import resolve_plan

    original = inspect_artifact(Path(args.image)).manifest
    err = Console(stderr=True, highlight=False)
    work = Path(tempfile.mkdtemp(prefix="osbake-rebuild-"))
    try:
        prepared = rebuild.prepare(
            original,
            work / "recipe",
            mirror=args.mirror,
            source=Path(args.source) if args.source else None,
        )
        base = recipe_mod.load(prepared.recipe)
        plan = resolve_plan(base, prepared.variant, prepared.arch)
        for note in prepared.notes:
            err.print(f"note: {note}")
        for change in rebuild.mirror_changes(original.mirror, plan.distro.mirror_state()):
            err.print(f"note: the mirror has changed since the build: {change}")
        outdir = Path(args.output) if args.output else work / "out"
        build_args = argparse.Namespace(
            output=str(outdir), json=False, verbose=False, no_cache=True, quiet=True
        )
        code = sandbox.isolate(
            lambda: _flush(
                guarded(
                    lambda: _run_builds(
                        base, [(prepared.variant, prepared.arch)], build_args, None
                    ),
                    verbose=bool(args.debug),
                )
            )
        )
        if code != 0:
            return code
        again = load_manifest(manifest_path(outdir, plan.image))
        result = rebuild.compare(original, again)
    finally:
        if not args.output:
            shutil.rmtree(work, ignore_errors=True)
    out = Console(highlight=False)
    for fmt in result.identical:
        out.print(f"{fmt}: identical")
    for fmt in result.different:
        out.print(f"{fmt}: DIFFERENT")
    for fmt in result.missing:
        out.print(f"{fmt}: not made by the rebuild")
    if result.different or result.missing:
        print(diff_mod.render(result.changes), end="")
        return 1
    return 0


def cmd_elements_list(args: argparse.Namespace) -> int:
    from osbake.elements import Catalog, SearchPath

    recipe_dir = Path(args.recipe).resolve().parent if args.recipe else None
    catalog = Catalog(SearchPath.for_recipe(recipe_dir))
    out = Console(highlight=False)
    for name in catalog.names():
        element = catalog.get(name)
        shadow = " (replaces a lower one)" if catalog.shadowed(name) else ""
        description = escape(" ".join(element.spec.description.split()))
        out.print(
            f"[bold]{name:<16}[/] [dim]{element.origin:<10}[/] {description}{shadow}",
            soft_wrap=True,
        )
    return 0


def cmd_elements_show(args: argparse.Namespace) -> int:
    from osbake.elements import Catalog, Phase, SearchPath

    recipe_dir = Path(args.recipe).resolve().parent if args.recipe else None
    catalog = Catalog(SearchPath.for_recipe(recipe_dir))
    if args.name not in catalog:
        raise UsageError(
            f"no element named '{args.name}'", hint=f"elements: {', '.join(catalog.names())}"
        )
    element = catalog.get(args.name)
    spec = element.spec
    out = Console(highlight=False)
    out.print(f"[bold]{element.name}[/]  ({element.origin}: {escape(str(element.path))})")
    out.print(" ".join(spec.description.split()), markup=False)
    for label, values in (
        ("depends", spec.depends),
        ("provides", spec.provides),
        ("conflicts", spec.conflicts),
        ("packages", spec.packages),
    ):
        if values:
            out.print(f"{label}: {', '.join(values)}")
    if spec.options:
        out.print("options:")
        for key, option in spec.options.items():
            default = json.dumps(option.default)
            choices = f", one of {', '.join(option.choices)}" if option.choices else ""
            fields = f", fields {', '.join(option.fields)}" if option.fields else ""
            out.print(
                f"  {key} ({option.type}{choices}{fields}, default {default}): "
                + " ".join(option.description.split()),
                soft_wrap=True,
                markup=False,
            )
    for phase in Phase:
        scripts = element.scripts(phase)
        if scripts:
            out.print(f"{phase}: {', '.join(s.path.name for s in scripts)}", markup=False)
    if element.static_dir:
        static = ", ".join(
            "/" + str(p.relative_to(element.static_dir))
            for p in sorted(element.static_dir.rglob("*"))
            if p.is_file()
        )
        out.print(f"static: {static}", markup=False)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from osbake.recipe.schema import recipe_schema

    print(json.dumps(recipe_schema(), indent=2))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    # Rootless caches hold files of subordinate ids: work on them in the build's namespace.
    return sandbox.isolate(lambda: _flush(guarded(lambda: _cache_action(args), verbose=args.debug)))


def _cache_action(args: argparse.Namespace) -> int:
    import time

    from osbake.cache import Store
    from osbake.disk.sizes import format_size, parse_size
    from osbake.settings import Settings

    settings = Settings.from_environment()
    store = Store(settings.store_dir)
    out = Console(highlight=False)
    try:
        if args.action == "ls":
            for entry in sorted(store.entries(), key=lambda e: -e.last_used):
                used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
                out.print(
                    f"{entry.key[:16]}  {entry.step:<16} {format_size(entry.size):>10}  used {used}"
                )
        elif args.action == "du":
            entries = store.entries()
            total = sum(e.size for e in entries)
            pool = settings.package_cache("debian")
            pool_size = sum(p.stat().st_size for p in pool.glob("*.deb")) if pool.is_dir() else 0
            out.print(
                f"step cache: {format_size(total)} in {len(entries)} entries "
                f"({settings.store_dir}, budget {format_size(store.budget)})"
            )
            out.print(f"packages:   {format_size(pool_size)} ({pool})")
        else:
            try:
                limit = parse_size(args.max_size) if args.max_size is not None else None
            except ValueError as exc:
                raise UsageError(str(exc), hint="e.g. --max-size 10GiB") from None
            removed = store.gc(limit)
            freed = sum(e.size for e in removed)
            out.print(f"removed {len(removed)} entries, {format_size(freed)} freed")
    except OsbakeError as exc:
        _print_error(Console(stderr=True, highlight=False), exc)
        return exc.exit_code
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from osbake.plan import check_recipe

    targets = check_recipe(recipe_mod.load(args.recipe), host=True)
    names = ", ".join(f"{variant or '(base)'}/{arch}" for variant, arch in targets)
    print(f"{args.recipe}: valid ({names})")
    return 0


# -- the parser --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osbake", description="Build, test and publish Linux OS images from recipes."
    )
    parser.add_argument("--version", action="version", version=f"osbake {osbake.__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        dest="debug",
        action="store_true",
        help="on an unexpected error, also print the traceback (commands have their own -v)",
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = command("build", cmd_build, "build images from a recipe")
    p.add_argument("recipe", help="the recipe file (YAML)")
    p.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    p.add_argument("--variant", help="build this variant of the recipe")
    p.add_argument("--arch", help="build for this architecture (default: the recipe's first)")
    p.add_argument("--all", action="store_true", help="build every variant x arch")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="print every command and its output"
    )
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    p.add_argument("--log", help="also append a plain-text build log to this file")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="run every step, neither using nor filling the cache",
    )

    p = command("plan", cmd_plan, "show the steps of a build and their content keys")
    p.add_argument("recipe")
    p.add_argument("--variant")
    p.add_argument("--arch")
    p.add_argument("--json", action="store_true")

    p = command("validate", cmd_validate, "check a recipe (every variant) without building")
    p.add_argument("recipe")

    p = command("inspect", cmd_inspect, "show the manifest of an artifact and verify it")
    p.add_argument("artifact")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--summary", action="store_true", help="do not list the packages")
    p.add_argument(
        "--recipe",
        action="store_true",
        help="print the recipe that builds the image again (osbake inspect IMAGE --recipe "
        "> recipe.yaml)",
    )

    p = command("diff", cmd_diff, "show what changed between two builds (images or manifests)")
    p.add_argument("old", help="an image or its <image>.manifest.json")
    p.add_argument("new", help="an image or its <image>.manifest.json")
    p.add_argument("--json", action="store_true", help="print the differences as JSON")
    p.add_argument(
        "--exit-code", action="store_true", help="exit 1 when there are differences (like git)"
    )

    p = command("rebuild", cmd_rebuild, "build an image again from its manifest and compare")
    p.add_argument("image", help="an image (its manifest beside it or inside it)")
    p.add_argument("--mirror", help="take packages from this mirror (e.g. a snapshot of then)")
    p.add_argument("--source", help="the folder of the original recipe's files and elements")
    p.add_argument("-o", "--output", help="keep the rebuilt image here (default: thrown away)")

    p = sub.add_parser("elements", help="list or show elements")
    esub = p.add_subparsers(metavar="ACTION")
    e = esub.add_parser("list", help="list the elements on the search path")
    e.add_argument("--recipe", help="also look in this recipe's elements/ folder")
    e.set_defaults(handler=cmd_elements_list)
    e = esub.add_parser("show", help="show one element")
    e.add_argument("name")
    e.add_argument("--recipe", help="also look in this recipe's elements/ folder")
    e.set_defaults(handler=cmd_elements_show)
    p.set_defaults(handler=cmd_elements_list, recipe=None)

    command("schema", cmd_schema, "print the recipe's JSON Schema")

    p = sub.add_parser("cache", help="list, measure or clean the step cache")
    csub = p.add_subparsers(metavar="ACTION")
    c = csub.add_parser("ls", help="list cache entries, most recently used first")
    c.set_defaults(handler=cmd_cache, action="ls")
    c = csub.add_parser("du", help="show how much space the caches take")
    c.set_defaults(handler=cmd_cache, action="du")
    c = csub.add_parser("gc", help="remove least recently used entries")
    c.add_argument("--max-size", help="shrink the step cache to this size (e.g. 10GiB, 0)")
    c.set_defaults(handler=cmd_cache, action="gc")
    p.set_defaults(handler=cmd_cache, action="du", max_size=None)
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(command, sub)
    return parser


def run_cli() -> Any:  # pragma: no cover - console script entry point
    sys.exit(main())
