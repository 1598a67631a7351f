"""Session fixtures: the real Apache Kafka broker and the real ClickHouse engine (chdb).

The broker is started once per test session by deploy/kafka.sh on free ports with a
throw-away data directory, and stopped at the end. If it cannot start, every test that
needs it errors: integration tests are never skipped. Topic and database names are
random per test so runs never see each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import runstream
from tests.helpers import REPO, create_topic, drop_databases, free_port


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The SDK's environment for one test: a RUNSTREAM_HOME of its own, no system-metrics
    sampler; a run the test left active is finished after it."""
    yield {"RUNSTREAM_HOME": str(tmp_path / "home"), "RUNSTREAM_SYSTEM_METRICS_S": "0"}
    active = runstream.active_run()
    if active is not None:
        active.finish()


@pytest.fixture(scope="session")
def kafka_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    port = free_port()
    controller = free_port()
    return {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_DATA_DIR": str(tmp_path_factory.mktemp("kafka")),
    }


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_env: dict[str, str]) -> Iterator[str]:
    """Bootstrap address of the session's real Kafka broker ("127.0.0.1:PORT")."""
    script = str(REPO / "deploy" / "kafka.sh")
    started = subprocess.run(
        [script, "start"], env=kafka_env, capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        pytest.fail(f"the Kafka broker did not start:\n{started.stderr}\n{started.stdout}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop"], env=kafka_env, capture_output=True, timeout=120)


@pytest.fixture
def kafka_topic(kafka_bootstrap: str) -> str:
    """A fresh topic (4 partitions) and its dead-letter topic, named at random."""
    name = f"rs-test-{uuid.uuid4().hex[:12]}"
    create_topic(kafka_bootstrap, name)
    create_topic(kafka_bootstrap, f"{name}.dlq", 1)
    return name


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded ClickHouse path for this test process (chdb opens one path per process)."""
    return "chdb://" + str(tmp_path_factory.mktemp("chdb"))


@pytest.fixture
def ch_database(chdb_dsn: str) -> Iterator[str]:
    """A random database name; tables are created in it by whoever needs them. Dropped
    after the test with every database named after it (``<name>_ref``): see
    :func:`tests.helpers.drop_databases`."""
    name = f"rs_test_{uuid.uuid4().hex[:12]}"
    yield name
    if "chdb" in sys.modules:  # else the engine never started in this process: nothing made
        drop_databases(chdb_dsn, name)
