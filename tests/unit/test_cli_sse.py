"""The event-stream decoder, fed plain bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hacontrol.cli.sse import SseDecoder, SseEvent, SseLineTooLong, iter_events

STREAM = (b": keep-alive\n\n"
          b"id: 4.1\nevent: node_drain\ndata: {\"node\": \"n1\"}\n\n"
          b"data: line one\r\ndata:line two\r\n\r\n"
          b"id: 5.0\n\n"
          b"event: ignored-without-data\n\n"
          b"retry: 10\nunknown field\ndata: x\n\n")
EVENTS = [SseEvent("4.1", "node_drain", '{"node": "n1"}'),
          SseEvent(None, "message", "line one\nline two"),
          SseEvent("5.0", "message", ""),
          SseEvent(None, "message", "x")]


def test_decodes_fields_comments_crlf_and_multiline_data() -> None:
    assert SseDecoder().feed(STREAM) == EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int]) -> None:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    edges = [0, *sorted(cuts), len(STREAM)]
    for a, b in zip(edges, edges[1:], strict=False):
        events += decoder.feed(STREAM[a:b])
    assert events == EVENTS


def test_an_event_completes_only_at_its_blank_line() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"id: 1.0\ndata: a\n") == []
    assert decoder.feed(b"\n") == [SseEvent("1.0", "message", "a")]
    # Fields do not leak into the next event.
    assert decoder.feed(b"data: b\n\n") == [SseEvent(None, "message", "b")]


def test_bad_utf8_is_replaced_not_fatal() -> None:
    assert SseDecoder().feed(b"data: \xff\n\n") == [SseEvent(None, "message", "\ufffd")]


def test_unfinished_event_at_the_end_is_dropped() -> None:
    chunks = iter([b"data: whole\n\n", b"id: 2.0\ndata: ha", b""])
    assert list(iter_events(lambda: next(chunks))) == [SseEvent(None, "message", "whole")]


def test_a_runaway_line_is_refused() -> None:
    decoder = SseDecoder(max_line=8)
    assert decoder.feed(b"data: 12") == []
    with pytest.raises(SseLineTooLong):
        decoder.feed(b"5678")
