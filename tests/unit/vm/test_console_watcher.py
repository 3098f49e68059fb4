"""ConsoleWatcher: clean lines from raw serial bytes, patterns matched in order."""

from __future__ import annotations

import re

from osbake import vm


def watcher(
    expect: list[str], fail_on: list[str] | None = None, **kwargs: object
) -> vm.ConsoleWatcher:
    return vm.ConsoleWatcher(
        [re.compile(p) for p in expect],
        [re.compile(p) for p in fail_on or []],
        **kwargs,  # type: ignore[arg-type]
    )


def test_escape_sequences_and_control_characters_are_removed() -> None:
    raw = (
        "\x1b[2J\x1b[01;01H\x1b[=3h\x1b[0m\x1b[1;32mOK\x1b[0m  Started\tthing\r\n"
        "\x1b(B\x07done\x1b]0;title\x07\n"
    )
    assert vm.clean_console(raw) == "OK  Started\tthing\ndone\n"


def test_lines_and_matches_across_chunk_boundaries() -> None:
    lines: list[str] = []
    w = watcher(["Welcome to Debian", "é"], on_line=lines.append)
    for chunk in (
        b"\x1b[1",
        b";32mWelcome to De",
        b"bian\x1b[0",
        b"m\r\n",
        "caf\u00e9".encode()[:4],
    ):
        w.feed(chunk, 1.0)
    assert lines == ["Welcome to Debian"]
    assert [r.matched for r in w.results] == [True, False]
    w.feed("caf\u00e9".encode()[4:] + b"\n", 2.0)
    assert lines == ["Welcome to Debian", "café"]
    assert w.complete
    assert w.results[1].seconds == 2.0


def test_an_unfinished_escape_does_not_leak_into_the_current_line() -> None:
    w = watcher(["login: $"])
    w.feed(b"debian login: \x1b[", 3.0)
    assert w.complete
    assert w.tail == ["debian login: "]


def test_a_prompt_without_newline_matches() -> None:
    w = watcher(["login:"])
    w.feed(b"Debian GNU/Linux 12 debian ttyS0\r\n\r\ndebian login: ", 42.5)
    assert w.complete
    assert w.results[0] == vm.PatternResult("login:", True, 42.5, "debian login: ")


def test_patterns_match_in_order() -> None:
    w = watcher(["second", "first"])
    w.feed(b"first\nsecond\n", 1.0)
    assert [r.matched for r in w.results] == [True, False]
    w.feed(b"first again\n", 2.0)
    assert w.complete
    assert w.results[1].seconds == 2.0


def test_the_next_pattern_may_match_later_in_the_same_line() -> None:
    w = watcher(["a+", "b", "a"])
    w.feed(b"aab ", 1.0)
    assert w.matched == 2
    w.feed(b"a\n", 1.5)
    assert w.complete
    assert w.results[2].text == "aab a"


def test_a_pattern_matched_on_the_unfinished_line_is_not_matched_twice() -> None:
    w = watcher(["x", "x"])
    w.feed(b"x", 1.0)
    w.feed(b"yz\n", 2.0)
    assert w.matched == 1
    w.feed(b"x\n", 3.0)
    assert w.complete


def test_an_empty_match_counts_once_and_moves_on() -> None:
    w = watcher(["", "^$", "end"])
    w.feed(b"\nend\n", 1.0)
    assert w.complete


def test_failure_patterns_match_anywhere() -> None:
    w = watcher(["login:"], ["Kernel panic"])
    w.feed(b"[    1.0] Kernel panic - not syncing: VFS\n", 7.0)
    assert w.failure == vm.PatternResult(
        "Kernel panic", True, 7.0, "[    1.0] Kernel panic - not syncing: VFS"
    )
    assert not w.complete


def test_the_tail_keeps_the_last_lines_and_the_unfinished_one() -> None:
    w = watcher(["never"], tail_lines=3)
    w.feed(b"".join(b"line %d\n" % i for i in range(10)) + b"prompt> ", 1.0)
    assert w.tail == ["line 8", "line 9", "prompt> "]
    w.close(2.0)
    assert w.tail == ["line 8", "line 9", "prompt> "]


def test_a_line_without_end_is_cut() -> None:
    lines: list[str] = []
    w = watcher(["never"], on_line=lines.append)
    w.feed(b"." * (vm.MAX_LINE + 10), 1.0)
    assert [len(line) for line in lines] == [vm.MAX_LINE]
    assert w.tail[-1] == "." * 10


def test_callbacks_see_each_match_with_its_index() -> None:
    seen: list[tuple[str, int]] = []
    w = watcher(["a", "b"], on_match=lambda result, index: seen.append((result.pattern, index)))
    w.feed(b"a b\n", 1.0)
    assert seen == [("a", 0), ("b", 1)]
