"""Read the host's apt sources, to default the mirror to what the host uses.

No mirror host name is written in osbake: the default is whatever
/etc/apt/sources.list(.d) of the machine says, for deb822 (.sources) and
one-line (.list) files alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    types: tuple[str, ...] = ("deb",)
    signed_by: str | None = None
    origin: str = ""

    def lines(self) -> list[str]:
        opts = f" [signed-by={self.signed_by}]" if self.signed_by else ""
        return [
            f"deb{opts} {self.uri} {suite} {' '.join(self.components)}" for suite in self.suites
        ]


@dataclass
class HostSources:
    entries: list[AptSource] = field(default_factory=list)

    def archive(self) -> AptSource | None:
        """The main archive: an entry with a plain codename suite (not -security etc.)."""
        for entry in self.entries:
            if "deb" in entry.types and any("-" not in s and "/" not in s for s in entry.suites):
                return entry
        return None

    def security(self) -> AptSource | None:
        for entry in self.entries:
            if "deb" in entry.types and any(s.endswith("-security") for s in entry.suites):
                return entry
        return None


def read_host_sources(apt_dir: Path = APT_DIR) -> HostSources:
    entries: list[AptSource] = []
    files = [apt_dir / "sources.list"] if (apt_dir / "sources.list").is_file() else []
    folder = apt_dir / "sources.list.d"
    if folder.is_dir():
        files += sorted(folder.glob("*.list")) + sorted(folder.glob("*.sources"))
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            entries += parse_deb822(text, str(path))
        else:
            entries += parse_one_line(text, str(path))
    return HostSources(entries)


def parse_deb822(text: str, origin: str = "") -> list[AptSource]:
    entries: list[AptSource] = []
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        uris = stanza.get("uris", "").split()
        suites = tuple(stanza.get("suites", "").split())
        if not uris or not suites:
            continue
        for uri in uris:
            entries.append(
                AptSource(
                    uri=uri.rstrip("/"),
                    suites=suites,
                    components=tuple(stanza.get("components", "").split()),
                    types=tuple(stanza.get("types", "deb").split()),
                    signed_by=stanza.get("signed-by") or None,
                    origin=origin,
                )
            )
    return entries


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            current[key] += "\n" + raw.strip()
            continue
        if ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_one_line(text: str, origin: str = "") -> list[AptSource]:
    entries: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind = words.pop(0)
        if kind not in ("deb", "deb-src"):
            continue
        signed_by = None
        if words and words[0].startswith("["):
            options = []
            while words:
                word = words.pop(0)
                options.append(word.strip("[]"))
                if word.endswith("]"):
                    break
            for option in options:
                if option.startswith("signed-by="):
                    signed_by = option.split("=", 1)[1]
        if len(words) < 2:
            continue
        entries.append(
            AptSource(
                words[0].rstrip("/"), (words[1],), tuple(words[2:]), (kind,), signed_by, origin
            )
        )
    return entries
