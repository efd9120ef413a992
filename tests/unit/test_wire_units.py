"""The worker's lean RESP parser (rushhpc.store.wire._parse), every reply type, without a server.

The RESP3 types the worker's scripts never return (null, boolean, double, map) are parsed off the hot
path (`_parse_rare`); these tests pin both paths, and that a reply cut short asks for more bytes."""

from __future__ import annotations

import pytest
import redis

from rushhpc.store.wire import _ErrorReply, _Incomplete, _parse

CASES = [
    (b"$3\r\nabc\r\n", "abc"),
    (b"$-1\r\n", None),
    (b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n", ["a", None, 7]),
    (b"*-1\r\n", None),
    (b"~2\r\n$1\r\nx\r\n$1\r\ny\r\n", ["x", "y"]),
    (b"*2\r\n*1\r\n$1\r\na\r\n$2\r\nbc\r\n", [["a"], "bc"]),
    (b":42\r\n", 42),
    (b"(12345678901234567890\r\n", 12345678901234567890),
    (b"+OK\r\n", "OK"),
    (b"_\r\n", None),
    (b"#t\r\n", True),
    (b"#f\r\n", False),
    (b",1.5\r\n", 1.5),
    (b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n*1\r\n$1\r\nc\r\n", {"a": 1, "b": ["c"]}),
]


@pytest.mark.parametrize(("wire", "value"), CASES, ids=[c[0][:1].decode() + str(i) for i, c in enumerate(CASES)])
def test_every_reply_type_parses_and_ends_where_the_reply_ends(wire, value):
    buf = bytearray(wire + b"+NEXT\r\n")
    parsed, end = _parse(buf, 0)
    assert parsed == value and type(parsed) is type(value)
    assert end == len(wire)


def test_an_error_reply_is_returned_not_raised():
    parsed, _ = _parse(bytearray(b"-ERR boom\r\n"), 0)
    assert isinstance(parsed, _ErrorReply) and str(parsed) == "ERR boom"


@pytest.mark.parametrize("wire", [w for w, _ in CASES if len(w) > 6])
def test_a_reply_cut_short_asks_for_more(wire):
    for cut in range(1, len(wire) - 1):
        with pytest.raises(_Incomplete):
            _parse(bytearray(wire[:cut]), 0)


def test_an_unknown_type_is_refused():
    with pytest.raises(redis.InvalidResponse, match="unexpected reply type"):
        _parse(bytearray(b"!5\r\nhello\r\n"), 0)
