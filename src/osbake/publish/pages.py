"""Pages for people beside the streams: a README, index.html and SHA256SUMS per version,
and an index.html at the root of the tree listing every image."""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

from osbake.manifest import Manifest
from osbake.publish.changelog import FILES
from osbake.publish.streams import INDEX_SJSON, Tree, version_key

VERSION_PAGES = ("README", "index.html", "SHA256SUMS")
# item ftypes that are not an image (the rest are)
NOT_IMAGES = frozenset({"manifest", *FILES})

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:72em}"
    "table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;"
    "border-bottom:1px solid #ddd}code{font-size:.85em}"
)


def _file_name(item: dict[str, Any]) -> str:
    return str(item["path"]).rsplit("/", 1)[-1]


def sha256sums(items: dict[str, Any], directory: str) -> str:
    lines = [f"{item['sha256']}  {_file_name(item)}" for item in _sorted(items)]
    return "\n".join(lines) + "\n"


def _sorted(items: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(items.values(), key=_file_name)


def _title(m: Manifest) -> str:
    variant = f" (variant {m.variant})" if m.variant else ""
    return f"{m.name}{variant}: {m.distro} {m.release} {m.arch}"


def version_readme(m: Manifest, directory: str, items: dict[str, Any]) -> str:
    serial = directory.rsplit("/", 1)[-1]
    lines = [
        f"{_title(m)}, serial {serial}",
        "",
        f"This directory holds one build of the osbake recipe '{m.name}'"
        + (f", variant '{m.variant}'" if m.variant else "")
        + f": a {m.distro} {m.release} image for {m.arch}"
        + (f", built {m.build.finished}" if m.build.finished else "")
        + f" by osbake {m.osbake_version}.",
        f"Recipe sha256: {m.recipe_sha256}",
        f"Packages: {len(m.packages)} (listed in the manifest)",
        "",
        "Files:",
    ]
    width = max(len(_file_name(i)) for i in items.values())
    for item in _sorted(items):
        lines.append(f"  {_file_name(item):<{width}}  {item['ftype']:<16} {item['size']:>12} bytes")
    manifest = next((i for i in items.values() if i["ftype"] == "manifest"), None)
    lines += [
        "",
        "How to verify:",
        "  sha256sum -c SHA256SUMS             # the files match their checksums",
        "  The checksums (md5, sha256, sha512) are also in the stream files under",
        "  streams/v1/ at the root of this tree; if the tree is signed, check the",
        "  signed index with the publisher's key, for example:",
        f"    sstream-query --keyring KEYRING ROOT_URL/{INDEX_SJSON} \\",
        f"        'path~{directory}/'",
        "    osbake sync --keyring KEYRING ROOT_URL DIR   # verifies signatures and checksums",
    ]
    image = next((i for i in _sorted(items) if i["ftype"] not in NOT_IMAGES), None)
    if manifest is not None and image is not None:
        lines += [
            "",
            f"The manifest ({_file_name(manifest)}) records what went into the image: the",
            "recipe, elements, packages with versions, and the build steps. With both files",
            "downloaded side by side, show it and check the image against it with",
            f"  osbake inspect {_file_name(image)}",
        ]
    if "changelog" in items and "changelog.json" in items:
        lines += [
            "",
            f"{_file_name(items['changelog'])} says what changed since the previous version of",
            "this image in the stream: packages added, removed and upgraded, kernel, boot and",
            f"sizes, as 'osbake diff' prints it; {_file_name(items['changelog.json'])} is the same",
            "as JSON ('osbake diff --json').",
        ]
    return "\n".join(lines) + "\n"


def version_html(m: Manifest, directory: str, items: dict[str, Any]) -> str:
    serial = directory.rsplit("/", 1)[-1]
    rows = "".join(
        f'<tr><td><a href="{html.escape(_file_name(i))}">{html.escape(_file_name(i))}</a></td>'
        f"<td>{html.escape(str(i['ftype']))}</td><td>{i['size']:,}</td>"
        f"<td><code>{html.escape(str(i['sha256']))}</code></td></tr>"
        for i in _sorted(items)
    )
    title = html.escape(f"{_title(m)}, serial {serial}")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
        f"<p>Recipe sha256 <code>{html.escape(m.recipe_sha256)}</code>; "
        f"{len(m.packages)} packages; osbake {html.escape(m.osbake_version)}.</p>"
        f"<table><tr><th>file</th><th>type</th><th>bytes</th><th>sha256</th></tr>{rows}</table>"
        '<p><a href="README">README</a> (how to verify) · '
        '<a href="SHA256SUMS">SHA256SUMS</a></p></body></html>\n'
    )


def write_root_page(repo: Path, products: dict[str, Tree]) -> None:
    """index.html at the root: every stream, product and version, newest first."""
    parts = [
        '<!doctype html><html><head><meta charset="utf-8"><title>Images</title>'
        f"<style>{_STYLE}</style></head><body><h1>Images</h1>"
        f'<p>Machine-readable: <a href="streams/v1/index.json">streams/v1/index.json</a>'
        f" (signed: <code>{INDEX_SJSON}</code> when present).</p>"
    ]
    for cid in sorted(products):
        parts.append(f"<h2>{html.escape(cid)}</h2><table>")
        parts.append("<tr><th>image</th><th>version</th><th>label</th><th>files</th></tr>")
        for pid, product in sorted(products[cid].get("products", {}).items()):
            for serial in sorted(product.get("versions", {}), key=version_key, reverse=True):
                version = product["versions"][serial]
                files = " ".join(
                    f'<a href="{html.escape(item["path"])}">{html.escape(name)}</a>'
                    for name, item in sorted(version.get("items", {}).items())
                )
                some = next(iter(version.get("items", {}).values()), None)
                folder = html.escape(str(some["path"]).rsplit("/", 1)[0]) + "/" if some else ""
                parts.append(
                    f"<tr><td>{html.escape(pid)}</td>"
                    f'<td><a href="{folder}">{html.escape(serial)}</a></td>'
                    f"<td>{html.escape(str(version.get('label', '')))}</td><td>{files}</td></tr>"
                )
        parts.append("</table>")
    parts.append("</body></html>\n")
    fd, name = tempfile.mkstemp(prefix=".index.html.", dir=repo)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(parts))
    os.chmod(name, 0o644)
    os.replace(name, repo / "index.html")
