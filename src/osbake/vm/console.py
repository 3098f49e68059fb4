"""Watching the serial console: clean lines out of raw bytes, and patterns matched in order."""

from __future__ import annotations

import codecs
import collections
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from osbake.errors import UsageError

TAIL_LINES = 40
# A line longer than this (a guest that never sends a newline) is cut into pieces.
MAX_LINE = 64 * 1024

# CSI sequences (colours, cursor moves, UEFI firmware's ESC[=3h), OSC strings, charset
# selection and two-byte escapes.
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_])"
)
# An escape sequence cut off at the end of what has arrived so far.
_ANSI_UNFINISHED = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[()])?$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_console(text: str) -> str:
    """Console text without escape sequences and control characters (tabs stay)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


@dataclass(frozen=True)
class PatternResult:
    """One expected pattern: whether and when (seconds after QEMU started) it showed."""

    pattern: str
    matched: bool = False
    seconds: float | None = None
    text: str | None = None  # the console line it matched in

    def to_json(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "matched": self.matched,
            "seconds": self.seconds,
            "text": self.text,
        }


def compile_patterns(patterns: Sequence[str], flag: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise UsageError(
                f"{flag} '{pattern}' is not a valid regular expression: {exc}",
                hint="patterns are Python regular expressions; escape special "
                "characters such as ( [ . * with a backslash",
            ) from None
    return compiled


class ConsoleWatcher:
    """Turns console bytes into clean lines and matches the patterns against them.

    Expected patterns match in order, each within one line: a pattern is searched
    in the rest of the line where the previous one matched, then in the lines after
    it. The line still being written counts too, so a prompt that waits without a
    newline (`login:`) matches. Failure patterns match anywhere, in any order.
    """

    def __init__(
        self,
        expect: Sequence[re.Pattern[str]],
        fail_on: Sequence[re.Pattern[str]] = (),
        *,
        on_line: Callable[[str], None] | None = None,
        on_match: Callable[[PatternResult, int], None] | None = None,
        tail_lines: int = TAIL_LINES,
    ) -> None:
        self._expect = list(expect)
        self._fail_on = list(fail_on)
        self._on_line = on_line
        self._on_match = on_match
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""  # raw text after the last newline
        self._pos = 0  # where in the current line the next expected pattern is searched
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.results = [PatternResult(p.pattern) for p in self._expect]
        self.failure: PatternResult | None = None

    @property
    def matched(self) -> int:
        return sum(1 for r in self.results if r.matched)

    @property
    def complete(self) -> bool:
        return self.matched == len(self.results)

    @property
    def tail(self) -> list[str]:
        """The last lines of the console, with the line still being written."""
        lines = list(self._tail)
        current = self._current()
        if current:
            lines.append(current)
        return lines[-(self._tail.maxlen or len(lines)) :]

    def feed(self, data: bytes, seconds: float) -> None:
        """Take what the console printed `seconds` after QEMU started."""
        self._partial += self._decoder.decode(data)
        while "\n" in self._partial or len(self._partial) > MAX_LINE:
            if "\n" in self._partial:
                raw, self._partial = self._partial.split("\n", 1)
            else:
                raw, self._partial = self._partial[:MAX_LINE], self._partial[MAX_LINE:]
            self._line_done(clean_console(raw), seconds)
        current = self._current()
        if current:
            self._match(current, seconds)

    def close(self, seconds: float) -> None:
        """The console ended: the unfinished line counts as a line."""
        self._partial += self._decoder.decode(b"", final=True)
        if self._partial:
            self._line_done(clean_console(self._partial), seconds)
            self._partial = ""

    def _current(self) -> str:
        return clean_console(_ANSI_UNFINISHED.sub("", self._partial))

    def _line_done(self, line: str, seconds: float) -> None:
        self._match(line, seconds)
        self._pos = 0
        self._tail.append(line)
        if self._on_line is not None:
            self._on_line(line)

    def _match(self, line: str, seconds: float) -> None:
        if self.failure is None:
            for pattern in self._fail_on:
                if pattern.search(line):
                    self.failure = PatternResult(pattern.pattern, True, round(seconds, 3), line)
                    break
        while not self.complete:
            index = self.matched
            found = self._expect[index].search(line, self._pos)
            if found is None:
                return
            # An empty match would not move on; count it once and step past it.
            self._pos = max(found.end(), self._pos + (1 if found.end() == found.start() else 0))
            result = PatternResult(self._expect[index].pattern, True, round(seconds, 3), line)
            self.results[index] = result
            if self._on_match is not None:
                self._on_match(result, index)
