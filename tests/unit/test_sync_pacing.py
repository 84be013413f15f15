"""How often agents sync, and what a failed sync says about the leader's view of the node:
the pure rules of `agent/link.py` and `scheduler/liveness.py`."""

from __future__ import annotations

import json

import pytest

from hacontrol.agent.httpclient import (
    ConnectFailed,
    ConnectionTimedOut,
    ConnectTimeout,
    HTTPError,
    RequestTimeout,
)
from hacontrol.agent.link import (
    BUSY_POLL_S,
    LONG_POLL_S,
    MAX_POLL_S,
    RETRY_MAX_S,
    RETRY_PAUSE_S,
    _poll_s,
    heard_until,
    poll_wait,
    retry_pause,
)
from hacontrol.model import keepalive
from hacontrol.model.errors import Rejection
from hacontrol.model.messages import SyncAnswer
from hacontrol.scheduler.liveness import BASE_POLL_S, LONGEST_POLL_S, poll_seconds

W = keepalive.WINDOW_S


def test_the_poll_grows_with_the_cluster_past_a_floor() -> None:
    assert poll_seconds(0) == poll_seconds(1) == BASE_POLL_S
    assert poll_seconds(5_000) == 10.0  # idle nodes: 500 answers a second
    assert poll_seconds(10**6) == LONGEST_POLL_S
    sizes = [poll_seconds(n) for n in range(0, 40_000, 997)]
    assert sizes == sorted(sizes)


def test_the_agent_polls_as_asked_unless_its_metrics_change() -> None:
    assert poll_wait(None, False) == LONG_POLL_S  # a leader that does not say
    assert poll_wait(12.0, False) == 12.0
    assert poll_wait(12.0, True) == BUSY_POLL_S
    assert poll_wait(0.2, True) == 0.2


@pytest.mark.parametrize("raw,want", [
    (5, 5.0), (2.5, 2.5), (10_000, MAX_POLL_S), (0, None), (-1, None), (True, None),
    ("5", None), (None, None), (float("nan"), None)])
def test_a_leaders_poll_is_read_only_when_sensible(raw: object, want: float | None) -> None:
    assert _poll_s(raw) == want


def test_the_answer_model_carries_the_poll() -> None:
    ans = SyncAnswer(2, "c1", 7, "1.3", 0, [], 7.5)
    assert SyncAnswer.from_dict(json.loads(json.dumps(ans.to_dict()))) == ans
    old = {k: v for k, v in ans.to_dict().items() if k != "poll_s"}
    assert SyncAnswer.from_dict(old).poll_s == LONG_POLL_S
    with pytest.raises(Rejection) as err:
        SyncAnswer.from_dict({**ans.to_dict(), "poll_s": "long"})
    assert err.value.field == "poll_s"


def test_a_refused_or_unsent_sync_shows_nothing() -> None:
    assert heard_until(None, None, 100.0, HTTPError("reset")) is None  # never written
    assert heard_until(None, None, 100.0, RequestTimeout("deadline")) is None
    assert heard_until(90.0, None, 100.0, ConnectFailed("refused")) is None
    assert heard_until(90.0, None, 100.0, ConnectTimeout("no connect")) is None
    assert heard_until(90.0, None, 100.0, ValueError("not JSON")) is None
    assert heard_until(90.0, None, 100.0, HTTPError("malformed")) is None


def test_a_closed_poll_was_counted_until_it_closed() -> None:
    # The leader closed or reset the connection under the poll: it counted the node until
    # then, whatever the retry on a new connection then met (here: refused).
    assert heard_until(90.0, 97.0, 100.0, ConnectFailed("refused")) == 97.0
    assert heard_until(90.0, 97.0, 100.0, HTTPError("closed the connection")) == 97.0


def test_a_timed_out_poll_counts_only_until_the_keepalive_window_before() -> None:
    for exc in (ConnectionTimedOut("ETIMEDOUT"), RequestTimeout("deadline")):
        assert heard_until(90.0, None, 100.0, exc) == 100.0 - W
        # Written too recently to know the path carried it.
        assert heard_until(100.0 - W + 0.5, None, 100.0, exc) is None


def test_failed_syncs_back_off_to_a_cap_with_jitter() -> None:
    assert retry_pause(1, 0.999) == pytest.approx(RETRY_PAUSE_S, rel=0.01)
    assert retry_pause(1, 0.0) == pytest.approx(RETRY_PAUSE_S / 2)
    pauses = [retry_pause(n, 0.999) for n in range(1, 12)]
    assert pauses == sorted(pauses) and pauses[-1] <= RETRY_MAX_S
    assert pauses[-1] == pytest.approx(RETRY_MAX_S, rel=0.01)
    assert retry_pause(10**6, 0.5) <= RETRY_MAX_S  # no overflow however long it fails
