"""Item filters of `osbake sync`: `key=value`, `key!=value`, `key~regex` (all must match).

`arch=` and `arch!=` compare architectures, not spellings: the kernel's, Debian's, OCI's
or a cloud's name of an architecture all match it (osbake.arch knows them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from osbake.arch import Arch, from_any
from osbake.errors import UsageError
from osbake.publish.streams import Item

_FILTER_RE = re.compile(r"^(?P<key>[A-Za-z0-9_.-]+)(?P<op>!=|=|~)(?P<value>.*)$")


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, item: Item) -> bool:
        actual = item.fields().get(self.key)
        if self.op == "=":
            return self._equal(actual)
        if self.op == "!=":
            return not self._equal(actual)
        assert self.pattern is not None
        return actual is not None and self.pattern.search(actual) is not None

    def _equal(self, actual: str | None) -> bool:
        if actual == self.value:
            return True
        if self.key != "arch" or actual is None:
            return False
        wanted = from_any(self.value)
        return wanted is not None and wanted == from_any(actual)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def parse_filter(text: str) -> Filter:
    match = _FILTER_RE.match(text)
    if match is None:
        raise UsageError(
            f"filter '{text}': write key=value, key!=value or key~regex",
            hint=f"for example arch={Arch.AMD64} release~^book ftype!=manifest",
        )
    key, op, value = match["key"], match["op"], match["value"]
    pattern = None
    if op == "~":
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise UsageError(f"filter '{text}': bad regular expression ({exc})") from exc
    return Filter(key, op, value, pattern)


def parse_filters(texts: Sequence[str]) -> list[Filter]:
    return [parse_filter(t) for t in texts]


def matches(filters: Sequence[Filter], item: Item) -> bool:
    return all(f.matches(item) for f in filters)
