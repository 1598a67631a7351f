"""Bad requests through gRPC are INVALID_ARGUMENT, and user text never becomes SQL."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.proto.errors import InvalidArgumentError
from runstream.query.client import Client
from tests.factories import T0, start_rank


@pytest.mark.parametrize("run_id", ["", "has space", "x" * 65, "semi;colon", "quote'"])
def test_bad_run_ids_are_invalid_argument(client: Client, run_id: str) -> None:
    with pytest.raises(InvalidArgumentError, match="run_id"):
        client.get_run(run_id)
    with pytest.raises(InvalidArgumentError, match="run_id"):
        client.metric_history(run_id, "loss")


def test_bad_page_sizes_and_tokens_are_invalid_argument(ch: Any, client: Client) -> None:
    start_rank(ch, "run-a", 0, 1, T0)
    with pytest.raises(InvalidArgumentError, match="page_size"):
        client.search_runs(page_size=1001)
    with pytest.raises(InvalidArgumentError, match="page_size"):
        # A page size only means something to the paged RPC (page_token "" = first page);
        # without a token the client reads the whole series as one stream.
        client.metric_history("run-a", "loss", page_size=1_000_001, page_token="")
    with pytest.raises(InvalidArgumentError, match="page_token"):
        client.search_runs(page_token="not-a-token")
    with pytest.raises(InvalidArgumentError, match="page_token"):
        client.metric_history("run-a", "loss", page_token="eyJ2IjoxfQ==")
    with pytest.raises(InvalidArgumentError, match="key"):
        client.metric_history("run-a", "")


def test_user_text_never_becomes_sql(ch: Any, client: Client) -> None:
    start_rank(ch, "run-a", 0, 1, T0, experiment="exp")
    hostile = "x' OR 1=1 --"
    runs, token = client.search_runs(hostile)
    assert (runs, token) == ([], "")
    assert len(client.metric_history("run-a", hostile)) == 0
    assert [r.run_id for r in client.iter_runs()] == ["run-a"]
