"""The pure CRASHED/RUNNING decision of runstream.consumer.liveness."""

from __future__ import annotations

from runstream.consumer.liveness import RankLiveness, StatusChange, status_changes

NOW = 1_760_000_100_000
TIMEOUT = 60_000


def rank(status: str, sent: str, last_ms: int, error: str = "") -> RankLiveness:
    return RankLiveness("r", 0, "exp", status, sent, error, last_ms)


def decide(*ranks: RankLiveness) -> list[tuple[str, str]]:
    return [(c.status, c.error) for c in status_changes(ranks, NOW, TIMEOUT)]


def test_running_rank_with_fresh_signs_of_life_is_left_alone():
    assert decide(rank("RUNNING", "RUNNING", NOW - TIMEOUT)) == []


def test_running_rank_silent_past_the_timeout_crashes():
    assert decide(rank("RUNNING", "RUNNING", NOW - TIMEOUT - 1)) == [
        ("CRASHED", "no heartbeat or event for 60 s")]


def test_rank_never_seen_alive_crashes():
    assert decide(rank("RUNNING", "RUNNING", 0))[0][0] == "CRASHED"


def test_crashed_rank_alive_again_is_running_and_stays_crashed_otherwise():
    assert decide(rank("CRASHED", "RUNNING", NOW - 5)) == [("RUNNING", "")]
    assert decide(rank("CRASHED", "RUNNING", NOW - TIMEOUT - 5)) == []


def test_terminal_status_sent_by_the_run_wins_over_ours():
    assert decide(rank("CRASHED", "FINISHED", NOW - 10 * TIMEOUT)) == [("FINISHED", "")]
    assert decide(rank("RUNNING", "FAILED", NOW, "boom")) == [("FAILED", "boom")]
    assert decide(rank("FINISHED", "FINISHED", 0)) == []


def test_changes_name_run_rank_and_experiment():
    r = RankLiveness("run-9", 3, "exp-x", "RUNNING", "RUNNING", "", 0)
    assert status_changes([r], NOW, TIMEOUT) == [
        StatusChange("run-9", 3, "exp-x", "CRASHED", "no heartbeat or event for 60 s")]
