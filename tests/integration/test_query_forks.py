"""Fork histories through the real engine and gRPC: a run forked from another at a step
reads the parent's points up to it and its own after it, as one series, in every form of
GetMetricHistory / ExportMetricHistory and in CompareRuns; own_points_only turns it off."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.proto import tables
from runstream.query.client import Client
from runstream.query.service import QueryService
from tests.factories import T0, insert, points, seed_through_consumer, started_event
from tests.integration.test_query_history import CheckCounting


def seed_fork(ch: Any) -> None:
    """parent logs loss at steps 0..99 (ranks 0, 1); child, forked at 49, logs 50..79;
    grandchild, forked from child at 70, logs 71..90."""
    seed_through_consumer(ch, [
        started_event("parent", r, 2, T0 + r, producer=f"pa{r}") for r in range(2)])
    seed_through_consumer(ch, [
        started_event("child", r, 2, T0 + 10_000 + r, producer=f"ch{r}", fork_run_id="parent",
                      fork_step=49) for r in range(2)])
    seed_through_consumer(ch, [started_event("grandchild", 0, 1, T0 + 20_000, producer="gc0",
                                             fork_run_id="child", fork_step=70)])
    for rank in range(2):
        insert(ch, tables.METRICS, points("parent", "loss", rank, range(100)))
        child = points("child", "loss", rank, range(50, 80), ts0=T0 + 10_000)
        insert(ch, tables.METRICS, [{**p, "value": -p["value"]} for p in child])
    insert(ch, tables.METRICS, points("grandchild", "loss", 0, range(71, 91), ts0=T0 + 20_000))


def test_a_forks_history_is_its_parents_up_to_the_fork_step_then_its_own(
    ch: Any, client: Client,
) -> None:
    seed_fork(ch)
    history = client.metric_history("child", "loss", ranks=[0])
    assert history.steps == list(range(80))  # one series: 0..49 inherited, 50..79 own
    assert history.values[:50] == [s * 0.5 for s in range(50)]  # the parent's points
    assert history.values[50:] == [-s * 0.5 for s in range(50, 80)]  # the child's
    own = client.metric_history("child", "loss", ranks=[0], own_points_only=True)
    assert own.steps == list(range(50, 80))
    both = client.metric_history("child", "loss")
    assert list(zip(both.ranks, both.steps, strict=True)) == [
        (r, s) for r in range(2) for s in range(80)]
    # The parent is untouched.
    assert client.metric_history("parent", "loss", ranks=[0]).steps == list(range(100))


def test_pages_of_a_fork_continue_across_the_fork_step(ch: Any, client: Client) -> None:
    seed_fork(ch)
    steps: list[tuple[int, int]] = []
    token = ""
    pages = 0
    while True:
        page = client.metric_history("child", "loss", page_size=30, page_token=token)
        steps += zip(page.ranks, page.steps, strict=True)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert steps == [(r, s) for r in range(2) for s in range(80)] and pages == 6
    # A token of the fork's history is not one of the run's own points.
    first = client.metric_history("child", "loss", page_size=30, page_token="")
    from runstream.proto.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="different request"):
        client.metric_history("child", "loss", page_size=30,
                              page_token=first.next_page_token, own_points_only=True)
    agg_steps: list[int] = []
    token = ""
    while True:
        page = client.metric_history("child", "loss", page_size=25, page_token=token,
                                     aggregate="max")
        agg_steps += page.steps
        token = page.next_page_token
        if not token:
            break
    assert agg_steps == list(range(80))


def test_downsampled_and_aggregated_fork_histories(ch: Any, client: Client) -> None:
    seed_fork(ch)
    down = client.metric_history("child", "loss", ranks=[0], max_points=10)
    assert down.downsampled and down.total_points == 80
    assert down.steps[0] == 0 and down.steps[-1] == 79
    assert min(down.min_values) == -79 * 0.5 and max(down.max_values) == 49 * 0.5
    own = client.metric_history("child", "loss", ranks=[0], max_points=10, own_points_only=True)
    assert own.total_points == 30 and own.steps[0] == 50
    mean = client.metric_history("child", "loss", aggregate="mean")
    assert mean.steps == list(range(80))
    assert mean.values[10] == (10 * 0.5 + 1000 + 10 * 0.5) / 2  # parent's ranks 0 and 1
    assert mean.values[60] == (-60 * 0.5 + -(1000 + 60 * 0.5)) / 2  # the child's
    assert client.metric_history("child", "loss", aggregate="mean",
                                 own_points_only=True).steps == list(range(50, 80))


def test_a_forks_clean_segments_are_not_checked_on_their_points(
    ch: Any, chdb_dsn: str, ch_database: str
) -> None:
    """The repeated-rank check takes each run of a fork's chain on its own summaries: the
    parent's steps 50..99 beside the child's are no repeat, so no point is read twice."""
    seed_fork(ch)
    repository = CheckCounting(chdb_dsn, ch_database)
    try:
        mean = QueryService(repository).metric_history("child", "loss", aggregate="mean")
        assert mean.steps == list(range(80))
        assert mean.values[60] == (-60 * 0.5 + -(1000 + 60 * 0.5)) / 2
        assert len(repository.checks) == 1 and repository.point_checks == []
    finally:
        repository.close()


def test_a_fork_of_a_fork_walks_up_the_chain(ch: Any, client: Client) -> None:
    seed_fork(ch)
    history = client.metric_history("grandchild", "loss", ranks=[0])
    assert history.steps == list(range(91))
    assert history.values[49] == 49 * 0.5 and history.values[50] == -50 * 0.5  # parent, child
    assert history.values[70] == -70 * 0.5 and history.values[71] == 71 * 0.5  # child, own
    info = client.get_run("grandchild").info
    assert (info.fork_run_id, info.fork_step) == ("child", 70)
    runs = {r.run_id: r for r in client.search_runs("exp")[0]}
    assert (runs["child"].fork_run_id, runs["child"].fork_step) == ("parent", 49)
    assert runs["parent"].fork_run_id == "" and runs["parent"].fork_step == 0


def test_compare_runs_summarises_a_forks_whole_history(ch: Any, client: Client) -> None:
    seed_fork(ch)
    comparison = client.compare_runs(["parent", "child"], ["loss"], {"loss": "maximize"})
    [loss] = comparison.metrics
    parent, child = loss.stats
    assert (parent.max, parent.last_step, parent.best_step) == (1000 + 99 * 0.5, 99, 99)
    # The child's history: parent 0..49 (max 1000 + 49 * 0.5 on rank 1) and its own 50..79.
    assert (child.max, child.best_step) == (1000 + 49 * 0.5, 49)
    assert (child.min, child.last_step) == (-(1000 + 79 * 0.5), 79)
    assert [r.fork_run_id for r in comparison.runs] == ["", "parent"]
