"""An SPDX 2.3 (JSON) software bill of materials for an image.

The document describes the image as one package that CONTAINS every installed
package; each package names its version, architecture, source package, a purl,
the licenses its Debian copyright file declares (DEP-5 `License:` fields, mapped
to SPDX identifiers where one exists, else a LicenseRef), the SHA-256 of the .deb
it was installed from when that file is at hand, and DEPENDS_ON relationships from
dpkg's status. Everything is read from the image tree without running anything in
it, and symlinks in the tree are resolved inside the tree, never on the host.

The document carries no build time of its own: `created` is what the caller gives
(the mirror's date or SOURCE_DATE_EPOCH), so two builds of one input give one SBOM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from osbake.manifest import Manifest, MirrorEntry, build_epoch

SPDX_VERSION = "SPDX-2.3"
# Bounds on what is read from an image tree (it is made by a recipe from anyone).
MAX_STATUS_BYTES = 64 << 20
MAX_COPYRIGHT_BYTES = 4 << 20
MAX_LINK_HOPS = 40

# Debian's short license names (DEP-5) that are not SPDX identifiers as written.
DEBIAN_TO_SPDX = {
    "GPL-1": "GPL-1.0-only",
    "GPL-1+": "GPL-1.0-or-later",
    "GPL-2": "GPL-2.0-only",
    "GPL-2+": "GPL-2.0-or-later",
    "GPL-3": "GPL-3.0-only",
    "GPL-3+": "GPL-3.0-or-later",
    "LGPL-2": "LGPL-2.0-only",
    "LGPL-2+": "LGPL-2.0-or-later",
    "LGPL-2.1": "LGPL-2.1-only",
    "LGPL-2.1+": "LGPL-2.1-or-later",
    "LGPL-3": "LGPL-3.0-only",
    "LGPL-3+": "LGPL-3.0-or-later",
    "AGPL-3": "AGPL-3.0-only",
    "AGPL-3+": "AGPL-3.0-or-later",
    "GFDL-1.2": "GFDL-1.2-only",
    "GFDL-1.2+": "GFDL-1.2-or-later",
    "GFDL-1.3": "GFDL-1.3-only",
    "GFDL-1.3+": "GFDL-1.3-or-later",
    "Expat": "MIT",
    "BSD-2-clause": "BSD-2-Clause",
    "BSD-3-clause": "BSD-3-Clause",
    "BSD-4-clause": "BSD-4-Clause",
    "Apache-2": "Apache-2.0",
    "Apache-2.0": "Apache-2.0",
    "Artistic": "Artistic-1.0-Perl",
    "Artistic-2": "Artistic-2.0",
    "MPL-1.1": "MPL-1.1",
    "MPL-2.0": "MPL-2.0",
    "Zlib": "Zlib",
    "zlib": "Zlib",
    "ISC": "ISC",
    "MIT": "MIT",
    "X11": "X11",
    "curl": "curl",
    "OpenSSL": "OpenSSL",
    "Python": "Python-2.0",
    "PSF-2": "Python-2.0",
    "CC0-1.0": "CC0-1.0",
    "CC0": "CC0-1.0",
    "BSL-1.0": "BSL-1.0",
    "OFL-1.1": "OFL-1.1",
    "Unicode-DFS-2016": "Unicode-DFS-2016",
    "WTFPL": "WTFPL",
    "0BSD": "0BSD",
}
_REF_CHARS = re.compile(r"[^A-Za-z0-9.-]+")
_LICENSE_LINE = re.compile(r"^License:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


@dataclass
class Installed:
    """One package as dpkg recorded it in the tree."""

    name: str
    version: str
    arch: str
    source: str
    source_version: str
    depends: list[str] = field(default_factory=list)  # names of installed packages
    licenses: list[str] = field(default_factory=list)  # Debian short names
    deb_sha256: str | None = None


def document(
    manifest: Manifest,
    packages: Iterable[Installed],
    *,
    created: str,
    namespace_seed: str = "",
) -> dict[str, Any]:
    """The SPDX 2.3 document (a JSON-ready dict) of one image."""
    items = sorted(packages, key=lambda p: (p.name, p.arch))
    image_id = "SPDXRef-Image"
    ids = {(p.name, p.arch): f"SPDXRef-Package-{i}-{_ref(p.name)}" for i, p in enumerate(items)}
    by_name = {p.name: ids[(p.name, p.arch)] for p in items}
    extracted: dict[str, dict[str, str]] = {}
    spdx_packages: list[dict[str, Any]] = [
        {
            "SPDXID": image_id,
            "name": manifest.image,
            "versionInfo": manifest.release,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "supplier": "NOASSERTION",
            "comment": f"{manifest.distro} {manifest.release} {manifest.arch}, built by osbake "
            f"from a recipe with sha256 {manifest.recipe_sha256}",
        }
    ]
    relationships: list[dict[str, str]] = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_id,
        }
    ]
    distro = f"{manifest.distro}-{manifest.release}"
    for item in items:
        spdx_id = ids[(item.name, item.arch)]
        entry: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": item.name,
            "versionInfo": item.version,
            "primaryPackagePurpose": "LIBRARY" if item.name.startswith("lib") else "APPLICATION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": _expression(item.licenses, extracted, item.name),
            "copyrightText": "NOASSERTION",
            "supplier": "NOASSERTION",
            "sourceInfo": f"built from the source package {item.source} {item.source_version}",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": _purl(manifest.distro, item, distro),
                }
            ],
            "comment": f"architecture {item.arch}",
        }
        if item.deb_sha256:
            entry["checksums"] = [{"algorithm": "SHA256", "checksumValue": item.deb_sha256}]
        spdx_packages.append(entry)
        relationships.append(
            {
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": spdx_id,
            }
        )
        for dependency in sorted(set(item.depends)):
            target = by_name.get(dependency)
            if target is not None and target != spdx_id:
                relationships.append(
                    {
                        "spdxElementId": spdx_id,
                        "relationshipType": "DEPENDS_ON",
                        "relatedSpdxElement": target,
                    }
                )
    digest = hashlib.sha256(
        json.dumps([manifest.image, manifest.recipe_sha256, namespace_seed, spdx_packages]).encode()
    ).hexdigest()[:32]
    doc: dict[str, Any] = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{manifest.image}-{manifest.release}-{manifest.arch}",
        "documentNamespace": f"https://spdx.org/spdxdocs/osbake-{_ref(manifest.image)}-{digest}",
        "creationInfo": {"created": created, "creators": ["Tool: osbake"]},
        "packages": spdx_packages,
        "relationships": relationships,
    }
    if extracted:
        doc["hasExtractedLicensingInfos"] = [extracted[key] for key in sorted(extracted)]
    return doc


def created(mirror: Iterable[MirrorEntry]) -> str:
    """The document's time: the build's epoch (osbake.manifest.build_epoch), never the
    time of the build, so that one input gives one document."""
    moment = datetime.fromtimestamp(build_epoch(entry.date for entry in mirror), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ref(text: str) -> str:
    return _REF_CHARS.sub("-", text).strip("-") or "x"


def _purl(distro: str, item: Installed, qualifier: str) -> str:
    return (
        f"pkg:deb/{quote(distro, safe='')}/{quote(item.name, safe='')}@"
        f"{quote(item.version, safe='')}?arch={quote(item.arch, safe='')}"
        f"&distro={quote(qualifier, safe='')}"
    )


def _expression(names: list[str], extracted: dict[str, dict[str, str]], package: str) -> str:
    ids: list[str] = []
    for name in names:
        spdx = DEBIAN_TO_SPDX.get(name)
        if spdx is None:
            spdx = f"LicenseRef-{_ref(name)}"
            extracted.setdefault(
                spdx,
                {
                    "licenseId": spdx,
                    "name": name,
                    "extractedText": f"The license Debian calls '{name}': see "
                    f"/usr/share/doc/{package}/copyright in the image",
                },
            )
        if spdx not in ids:
            ids.append(spdx)
    if not ids:
        return "NOASSERTION"
    return " AND ".join(ids)


# -- reading a Debian tree ---------------------------------------------------------------


def read_debian_tree(
    tree: Path, manifest: Manifest, debs: Mapping[str, Path] | None = None
) -> list[Installed]:
    """The installed packages of a Debian tree, with dependencies, licenses and .deb sums.

    `debs` maps a .deb's file name (as apt names it: NAME_VERSION_ARCH.deb, the epoch's
    ':' as '%3a') to its path, e.g. the package pool's files.
    """
    status = _read_inside(tree, "var/lib/dpkg/status", MAX_STATUS_BYTES) or b""
    depends = _depends(status.decode("utf-8", "replace"))
    installed: list[Installed] = []
    for package in manifest.packages:
        item = Installed(
            package.name,
            package.version,
            package.arch,
            package.source,
            package.source_version,
            depends=depends.get(package.name, []),
            licenses=_licenses(tree, package.name),
        )
        if debs:
            deb = debs.get(deb_name(package.name, package.version, package.arch))
            if deb is not None:
                item.deb_sha256 = _sha256(deb)
        installed.append(item)
    return installed


def deb_name(name: str, version: str, arch: str) -> str:
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def _depends(status: str) -> dict[str, list[str]]:
    """Package -> the packages it depends on (Depends and Pre-Depends, installed ones)."""
    paragraphs = [p for p in status.split("\n\n") if p.strip()]
    records: list[dict[str, str]] = []
    for paragraph in paragraphs:
        fields: dict[str, str] = {}
        key = ""
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            records.append(fields)
    provided: dict[str, str] = {}
    names = {r["Package"] for r in records}
    for record in records:
        for virtual in _names(record.get("Provides", "")):
            provided.setdefault(virtual, record["Package"])
    result: dict[str, list[str]] = {}
    for record in records:
        wanted: list[str] = []
        relation = ", ".join(v for v in (record.get("Pre-Depends"), record.get("Depends")) if v)
        for group in relation.split(","):
            for alternative in group.split("|"):
                name = alternative.strip().split(" ")[0].split("(")[0].split(":")[0]
                found = name if name in names else provided.get(name)
                if found:
                    wanted.append(found)
                    break
        result[record["Package"]] = wanted
    return result


def _names(relation: str) -> list[str]:
    return [
        part.strip().split(" ")[0].split("(")[0].split(":")[0]
        for part in relation.split(",")
        if part.strip()
    ]


def _licenses(tree: Path, package: str) -> list[str]:
    if "/" in package or package.startswith("."):
        return []
    text = _read_inside(tree, f"usr/share/doc/{package}/copyright", MAX_COPYRIGHT_BYTES)
    if text is None:
        return []
    found: list[str] = []
    for match in _LICENSE_LINE.finditer(text.decode("utf-8", "replace")):
        # "GPL-2+ or Artistic", "GPL-2+ with OpenSSL exception": take each name.
        for part in re.split(r"\s+(?:or|and|,)\s+|,\s*", match.group(1)):
            name = part.split(" with ")[0].strip().rstrip(",")
            if name and " " not in name and name not in found and len(name) < 64:
                found.append(name)
    return found


def _read_inside(tree: Path, relative: str, limit: int) -> bytes | None:
    """A regular file of the tree, symlinks resolved inside the tree; None if absent."""
    resolved = _resolve_inside(tree, PurePosixPath(relative))
    if resolved is None:
        return None
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit + 1)[:limit]
    finally:
        os.close(fd)


def _resolve_inside(tree: Path, relative: PurePosixPath) -> Path | None:
    """Follow symlinks as the image would see them: '/' is the tree's root."""
    parts = list(relative.parts)
    current: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = tree.joinpath(*current, part)
        try:
            info = candidate.lstat()
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > MAX_LINK_HOPS:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = []
            parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
            continue
        current.append(part)
    return tree.joinpath(*current)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(4 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
