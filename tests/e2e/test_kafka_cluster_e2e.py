"""A real three-node Kafka cluster (deploy/kafka.sh, KAFKA_NODES=3, on loopback) under four
rank processes and a consumer group of two `runstream consume` processes, while brokers
fail: the broker leading the run's partitions SIGKILLed and restarted, a rolling restart of
all three, two of three down at once. Every point is stored exactly once each time.

The topic is created by the consumers themselves (RUNSTREAM_TOPIC_PARTITIONS=4,
RUNSTREAM_TOPIC_REPLICATION=3, so min.insync.replicas=2); the cluster does not auto-create
topics. As in test_consumer_group_e2e, each consumer writes its own embedded ClickHouse
(chdb opens one path per process), so exactness is checked on the union of the two stores
collapsed by each point's identity (run, key, rank, step, producer, seq, idx), the way
one shared ReplacingMergeTree collapses it: each (rank, key, step) logged is there exactly
once, with its value, and nothing else is.

Timings (failover, rejoin, the slowest Run.log call of any rank) are printed, never
asserted: they depend on the machine. The cluster is the module's own (not the session's
single broker), started once for the module.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from runstream.consumer.topics import TopicConfig, TopicState, ensure_topics
from tests.e2e.rank_job import value
from tests.helpers import REPO, free_port_range, wait_for

pytestmark = pytest.mark.kafka

KAFKA_SH = str(REPO / "deploy" / "kafka.sh")
NODES = 3
WORLD_SIZE = 4
PARTITIONS = 4
KEYS = ("loss", "acc")

# One rank: logs (loss, acc) every ~10 ms until the stop file appears, timing each
# Run.log call; writes how many steps it logged and the call times to its result file.
RANK = r"""
import json, sys, time
from pathlib import Path
import runstream
from tests.e2e.rank_job import value
stop, out = Path(sys.argv[1]), Path(sys.argv[2])
calls = []  # (seconds the call took, time.time() when it began)
with runstream.init(experiment="cluster") as run:
    step = 0
    while not stop.exists():
        at, started = time.time(), time.perf_counter()
        run.log({"loss": value(run.rank, step, "loss"), "acc": value(run.rank, step, "acc")},
                step=step)
        calls.append((time.perf_counter() - started, at))
        step += 1
        time.sleep(0.01)
    rank = run.rank
calls.sort()
out.write_text(json.dumps({"rank": rank, "steps": step, "slowest": calls[-50:],
                           "p99_log_s": calls[int(len(calls) * 0.99)][0]}))
"""

# The metric points of one run in one consumer's store (read after the consumer stopped).
VERIFY = r"""
import json, sys
import clickhouse_connect
c = clickhouse_connect.get_client(dsn=sys.argv[1], database=sys.argv[2])
rows = c.query("SELECT rank, key, step, value, producer_id, seq, idx FROM metrics FINAL"
               " WHERE run_id = %(run)s AND key IN ('loss', 'acc')",
               parameters={"run": sys.argv[3]}).result_rows
print(json.dumps([list(r) for r in rows]))
"""


class Cluster:
    """The module's three-node cluster: deploy/kafka.sh's environment, and its state as
    an admin client sees it."""

    def __init__(self, env: dict[str, str], bootstrap: str) -> None:
        self.env = env
        self.bootstrap = bootstrap
        self.servers = bootstrap.split(",")
        self.data = Path(env["KAFKA_DATA_DIR"])
        self.admin = self._new_admin()

    def _new_admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(bootstrap_servers=self.servers, client_id="rs-test-cluster",
                                reconnect_backoff_max_ms=500, request_timeout_ms=5000)

    def committed(self, group: str) -> int:
        """Messages ``group`` committed over all partitions (0 while that cannot be read).
        The admin client is made anew after a failure: kafka-python's keeps asking the
        group coordinator it knew, which may be the broker just killed."""
        try:
            offsets = self.admin.list_group_offsets({group: None}).get(group, {})
        except KafkaError:
            self.admin.close()
            self.admin = self._new_admin()
            return 0
        return sum(o.offset for o in offsets.values() if o.offset > 0)

    def script(self, *args: str) -> str:
        done = subprocess.run([KAFKA_SH, *args], env=self.env, capture_output=True, text=True,
                              timeout=300)
        if done.returncode not in (0, 3):
            raise AssertionError(f"kafka.sh {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def start(self, node: int | None = None) -> None:
        self.script("start", *(() if node is None else (str(node),)))

    def stop(self, node: int) -> None:
        self.script("stop", str(node))

    def kill(self, node: int) -> None:
        """SIGKILL node ``node``'s JVM and wait until it is gone."""
        pid = int((self.data / f"node-{node}" / "broker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while True:  # the JVM was started by nohup in kafka.sh, reaped by init
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def partitions(self, topic: str) -> list[dict[str, Any]]:
        """The topic's partitions as the cluster describes them ([] while it cannot)."""
        try:
            described = self.admin.describe_topics([topic])
        except KafkaError:
            return []
        return list(described[0].get("partitions") or []) if described else []

    def leaders(self, topic: str) -> dict[int, int]:
        return {p["partition_index"]: p["leader_id"] for p in self.partitions(topic)}

    def in_sync(self, topic: str) -> bool:
        """Every partition has all NODES replicas in sync."""
        parts = self.partitions(topic)
        return len(parts) == PARTITIONS and all(len(p["isr_nodes"]) == NODES for p in parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    port = free_port_range(2 * NODES)  # brokers, then controllers
    env = {**os.environ, "KAFKA_NODES": str(NODES), "KAFKA_PORT": str(port),
           "KAFKA_CONTROLLER_PORT": str(port + NODES),
           "KAFKA_DATA_DIR": str(tmp_path_factory.mktemp("kafka-cluster"))}
    started = subprocess.run([KAFKA_SH, "start"], env=env, capture_output=True, text=True,
                             timeout=600)
    if started.returncode != 0:
        pytest.fail(f"the Kafka cluster did not start:\n{started.stderr}\n{started.stdout}")
    cluster = Cluster(env, started.stdout.strip().splitlines()[-1])
    try:
        yield cluster
    finally:
        cluster.admin.close()
        subprocess.run([KAFKA_SH, "stop"], env=env, capture_output=True, timeout=300)


class Job:
    """One test's pipeline on the cluster: two `runstream consume` processes in one
    group (each with its own store) creating the topic, and WORLD_SIZE ranks of one run."""

    def __init__(self, cluster: Cluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.tmp = tmp_path
        suffix = uuid.uuid4().hex[:8]
        self.topic = f"rs-cluster-{suffix}"
        self.group = f"rs-cluster-group-{suffix}"
        self.run_id = f"cluster-{suffix}"
        self.spool = tmp_path / "rank-spool"
        self.stop_file = tmp_path / "stop-ranks"
        base = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        base.update({"RUNSTREAM_KAFKA": cluster.bootstrap, "RUNSTREAM_TOPIC": self.topic})
        self.consumer_env = {
            **base, "RUNSTREAM_HOME": str(tmp_path / "consumer-home"),
            "RUNSTREAM_CLICKHOUSE_DATABASE": "rs", "RUNSTREAM_CONSUMER_GROUP": self.group,
            "RUNSTREAM_TOPIC_PARTITIONS": str(PARTITIONS), "RUNSTREAM_TOPIC_REPLICATION": "3",
            "RUNSTREAM_CONSUMER_MAX_BATCH_AGE_S": "0.2", "RUNSTREAM_CONSUMER_PROGRESS_S": "2",
        }
        self.rank_env = {**base, "RUNSTREAM_HOME": str(tmp_path / "rank-home"),
                         "RUNSTREAM_SPOOL_DIR": str(self.spool),
                         "RUNSTREAM_SYSTEM_METRICS_S": "0", "TORCHELASTIC_RUN_ID": self.run_id}
        self.dsns = {name: f"chdb://{tmp_path / ('store-' + name)}" for name in ("a", "b")}
        self.consumers: dict[str, subprocess.Popen[bytes]] = {}
        self.ranks: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def _log(self, name: str) -> IO[bytes]:
        fh = open(self.tmp / f"{name}.log", "wb")
        self._logs.append(fh)
        return fh

    def start_consumers(self) -> None:
        consume = [sys.executable, "-m", "runstream.cli.main", "consume"]
        for name, dsn in self.dsns.items():
            out = self._log(f"consumer-{name}")
            self.consumers[name] = subprocess.Popen(
                consume, env={**self.consumer_env, "RUNSTREAM_CLICKHOUSE": dsn},
                stdout=out, stderr=subprocess.STDOUT)
        wait_for(self._members_with_partitions, lambda n: n == 2, timeout_s=120,
                 interval_s=0.2, what="two group members with partitions")

    def _members_with_partitions(self) -> int:
        for name, proc in self.consumers.items():
            if proc.poll() is not None:
                log = (self.tmp / f"consumer-{name}.log").read_text(errors="replace")
                raise AssertionError(f"consumer {name} exited with {proc.returncode}:\n{log}")
        try:
            info: dict[str, Any] = self.cluster.admin.describe_groups([self.group]).get(
                self.group) or {}
        except KafkaError:
            return 0
        return sum(1 for m in info.get("members", [])
                   if (m.get("member_assignment") or {}).get("assigned_partitions"))

    def start_ranks(self) -> None:
        for r in range(WORLD_SIZE):
            env = {**self.rank_env, "RANK": str(r), "LOCAL_RANK": str(r),
                   "WORLD_SIZE": str(WORLD_SIZE)}
            self.ranks.append(subprocess.Popen(
                [sys.executable, "-c", RANK, str(self.stop_file), str(self.tmp / f"rank-{r}.json")],
                cwd=REPO, env=env, stdout=self._log(f"rank-{r}"), stderr=subprocess.STDOUT))

    def run_partitions(self) -> set[int]:
        """The partitions the run's keys ("<run_id>/<rank>") go to (kafka-python's
        default partitioner: murmur2 of the key)."""
        return {(murmur2(f"{self.run_id}/{r}".encode()) & 0x7FFFFFFF) % PARTITIONS
                for r in range(WORLD_SIZE)}

    def committed(self) -> int:
        return self.cluster.committed(self.group)

    def wait_progress(self, what: str, more_than: int | None = None) -> int:
        """Wait until the group has committed more than it has now (or ``more_than``)."""
        floor = self.committed() if more_than is None else more_than
        return wait_for(self.committed, lambda n: n > floor, timeout_s=120, interval_s=0.2,
                        what=what)

    def spool_files(self) -> list[Path]:
        if not self.spool.is_dir():
            return []
        return [p for p in self.spool.iterdir()
                if p.suffix in (".spool", ".part") or ".claimed-" in p.name]

    def stop_ranks(self) -> list[dict[str, Any]]:
        self.stop_file.touch()
        codes = [p.wait(timeout=120) for p in self.ranks]
        assert codes == [0] * WORLD_SIZE, f"ranks exited with {codes}"
        return [json.loads((self.tmp / f"rank-{r}.json").read_text()) for r in range(WORLD_SIZE)]

    def stop_consumers_when_done(self) -> None:
        """Wait until the group has committed every message of the topic, then SIGTERM
        both consumers (each must exit cleanly)."""
        consumer = KafkaConsumer(bootstrap_servers=self.cluster.servers,
                                 client_id="rs-test-ends")
        try:
            from kafka import TopicPartition

            ends = consumer.end_offsets([TopicPartition(self.topic, p)
                                         for p in range(PARTITIONS)])
        finally:
            consumer.close()
        total = sum(ends.values())
        wait_for(self.committed, lambda n: n >= total, timeout_s=180, interval_s=0.2,
                 what=f"all {total} messages committed by the group")
        for proc in self.consumers.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(timeout=60) for name, proc in self.consumers.items()}
        assert codes == {"a": 0, "b": 0}, f"consumers exited with {codes}"

    def check_every_point_once(self, results: list[dict[str, Any]]) -> int:
        """Each logged (rank, key, step) is stored exactly once in the union of the two
        stores, with its value, and nothing else; returns the number of points."""
        readers = [subprocess.Popen([sys.executable, "-c", VERIFY, dsn, "rs", self.run_id],
                                    stdout=subprocess.PIPE, text=True)
                   for dsn in self.dsns.values()]
        union: dict[tuple[Any, ...], tuple[int, str, int, float]] = {}
        for reader in readers:
            out, _ = reader.communicate(timeout=180)
            assert reader.returncode == 0
            for rank, key, step, val, producer, seq, idx in json.loads(out):
                union[(rank, key, step, producer, seq, idx)] = (rank, key, step, val)
        expected = {(res["rank"], key, step): value(res["rank"], step, key)
                    for res in results for key in KEYS for step in range(res["steps"])}
        copies = collections.Counter((r, k, s) for r, k, s, _ in union.values())
        duplicated = [p for p, n in copies.items() if n > 1]
        assert not duplicated, f"{len(duplicated)} points stored twice, e.g. {duplicated[:3]}"
        missing = expected.keys() - copies.keys()
        assert not missing, f"{len(missing)} points lost, e.g. {sorted(missing)[:3]}"
        assert copies.keys() == expected.keys(), "points stored that no rank logged"
        for r, k, s, val in union.values():
            assert val == expected[(r, k, s)]
        return len(expected)

    def kill_all(self) -> None:
        for proc in [*self.ranks, *self.consumers.values()]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for fh in self._logs:
            fh.close()


@pytest.fixture
def job(cluster: Cluster, tmp_path: Path) -> Iterator[Job]:
    j = Job(cluster, tmp_path)
    try:
        yield j
    finally:
        j.kill_all()
        # A test that failed mid-outage leaves the next one a whole cluster.
        cluster.start()


def report(what: str, results: list[dict[str, Any]], fault: tuple[float, float],
           **timings: float) -> None:
    """Print the slowest Run.log call of any rank, overall and while the fault lasted
    (``fault``: time.time() from, to), and the timings."""
    calls = [tuple(c) for r in results for c in r["slowest"]]
    slowest = max(calls)
    during = max((c for c in calls if fault[0] <= c[1] <= fault[1]), default=(0.0, 0.0))
    outside = max((c for c in calls if not fault[0] <= c[1] <= fault[1]), default=(0.0, 0.0))
    p99 = max(r["p99_log_s"] for r in results)
    extra = "".join(f", {name} {seconds:.1f} s" for name, seconds in timings.items())
    print(f"\n{what}: slowest Run.log {slowest[0] * 1000:.2f} ms "
          f"({slowest[1] - fault[0]:+.1f} s from the fault), slowest during the fault "
          f"{during[0] * 1000:.2f} ms, outside it {outside[0] * 1000:.2f} ms (of each rank's "
          f"50 slowest), p99 {p99 * 1000:.3f} ms, over "
          f"{sum(r['steps'] for r in results)} calls{extra}")


def test_the_consumer_creates_the_topics_and_refuses_one_with_other_settings(
    cluster: Cluster, tmp_path: Path
) -> None:
    topic = f"rs-cluster-topics-{uuid.uuid4().hex[:8]}"
    asked = TopicConfig(partitions=PARTITIONS, replication=3)
    created = ensure_topics(cluster.servers, asked, topic, f"{topic}.dlq")
    assert [s.name for s in created.create] == [topic, f"{topic}.dlq"]
    again = ensure_topics(cluster.servers, asked, topic, f"{topic}.dlq")
    assert again.create == ()
    assert again.existing[0] == TopicState(topic, PARTITIONS, 3, 2)
    assert (again.existing[1].replication, again.existing[1].min_insync) == (3, 2)
    # A consumer asking for other settings says what differs and does not start.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update({"RUNSTREAM_KAFKA": cluster.bootstrap, "RUNSTREAM_TOPIC": topic,
                "RUNSTREAM_HOME": str(tmp_path / "home"), "RUNSTREAM_TOPIC_PARTITIONS": "8",
                "RUNSTREAM_TOPIC_REPLICATION": "2"})
    refused = subprocess.run([sys.executable, "-m", "runstream.cli.main", "consume"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert f"topic {topic} has 4 partitions, RUNSTREAM_TOPIC_PARTITIONS asks for 8" \
        in refused.stderr
    assert f"topic {topic} has 3 replicas, RUNSTREAM_TOPIC_REPLICATION asks for 2" \
        in refused.stderr
    assert cluster.partitions(topic) and len(cluster.partitions(topic)) == PARTITIONS


def test_partition_leader_sigkilled_while_four_ranks_log_then_rejoins(
    cluster: Cluster, job: Job
) -> None:
    job.start_consumers()
    state = ensure_topics(cluster.servers, TopicConfig(partitions=PARTITIONS, replication=3),
                          job.topic, f"{job.topic}.dlq").existing
    assert state[0] == TopicState(job.topic, PARTITIONS, 3, 2), "created by the consumers"
    job.start_ranks()
    job.wait_progress("points flowing before the kill", more_than=0)
    leaders = cluster.leaders(job.topic)
    ours = job.run_partitions()
    victim = collections.Counter(leaders[p] for p in ours).most_common(1)[0][0]
    fault_from = time.time()
    cluster.kill(victim)
    killed = time.monotonic()
    wait_for(lambda: cluster.leaders(job.topic),
             lambda ls: len(ls) == PARTITIONS and victim not in ls.values()
             and -1 not in ls.values(), timeout_s=60, interval_s=0.1,
             what="new leaders for the killed broker's partitions")
    failover = time.monotonic() - killed
    job.wait_progress("the group consuming after the kill")
    carried_on = time.monotonic() - killed
    starting = time.monotonic()
    cluster.start(victim)
    restarted = time.monotonic()
    wait_for(lambda: cluster.in_sync(job.topic), timeout_s=120, interval_s=0.2,
             what="the restarted broker back in every ISR")
    rejoined = time.monotonic() - restarted
    fault_to = time.time()
    job.wait_progress("points flowing after the rejoin")
    results = job.stop_ranks()
    job.stop_consumers_when_done()
    points = job.check_every_point_once(results)
    report(f"leader (node {victim}, leading {sum(leaders[p] == victim for p in ours)} of the "
           f"run's {len(ours)} partitions) SIGKILLed: {points} points exactly once", results,
           (fault_from, fault_to),
           new_leaders_after=failover, group_committing_after=carried_on,
           restart_took=restarted - starting, isr_full_after_restart=rejoined)


def test_rolling_restart_of_all_three_brokers_during_a_run(cluster: Cluster, job: Job) -> None:
    job.start_consumers()
    job.start_ranks()
    job.wait_progress("points flowing before the restarts", more_than=0)
    took: dict[str, float] = {}
    fault_from = time.time()
    for node in range(1, NODES + 1):
        began = time.monotonic()
        cluster.stop(node)
        cluster.start(node)
        wait_for(lambda: cluster.in_sync(job.topic), timeout_s=120, interval_s=0.2,
                 what=f"node {node} back in every ISR")
        took[f"node_{node}"] = time.monotonic() - began
    fault_to = time.time()
    job.wait_progress("points flowing after the restarts")
    results = job.stop_ranks()
    job.stop_consumers_when_done()
    points = job.check_every_point_once(results)
    report(f"rolling restart (stop, start, ISR full; per node): {points} points exactly once",
           results, (fault_from, fault_to), **took)


def test_two_of_three_brokers_down_the_sdk_spools_and_nothing_is_lost(
    cluster: Cluster, job: Job
) -> None:
    job.start_consumers()
    job.start_ranks()
    job.wait_progress("points flowing before the outage", more_than=0)
    leaders = cluster.leaders(job.topic)
    first = collections.Counter(leaders[p] for p in job.run_partitions()).most_common(1)[0][0]
    second = next(n for n in range(1, NODES + 1) if n != first)
    fault_from = time.time()
    cluster.kill(first)
    cluster.kill(second)
    down = time.monotonic()
    # acks=all with min.insync.replicas=2: one broker cannot acknowledge; the SDK spools.
    wait_for(job.spool_files, timeout_s=60, interval_s=0.1, what="the ranks spooling")
    spooling_after = time.monotonic() - down
    assert all(p.poll() is None for p in job.ranks), "a rank died during the outage"
    cluster.start()
    back = time.monotonic()
    wait_for(lambda: cluster.in_sync(job.topic), timeout_s=120, interval_s=0.2,
             what="both brokers back in every ISR")
    in_sync_after = time.monotonic() - back
    wait_for(job.spool_files, lambda files: not files, timeout_s=120, interval_s=0.2,
             what="the ranks' spool sent to Kafka")
    drained_after = time.monotonic() - back
    fault_to = time.time()
    job.wait_progress("points flowing after the outage")
    results = job.stop_ranks()
    job.stop_consumers_when_done()
    points = job.check_every_point_once(results)
    report(f"nodes {first} and {second} SIGKILLed together: {points} points exactly once",
           results, (fault_from, fault_to), outage=back - down, spooling_after=spooling_after,
           isr_full_after_restart=in_sync_after, spool_sent_after_restart=drained_after)
