"""Runstream's consumer: run events from Kafka (or the local spool) into ClickHouse.

The chain, one module a stage: :mod:`~runstream.consumer.sources` (Kafka consumer group,
spool files) -> :mod:`~runstream.consumer.pipeline` (decode, validate, batch, write, then
commit) -> :mod:`~runstream.consumer.rows` / :mod:`~runstream.consumer.points` (rows per
table) -> :mod:`~runstream.consumer.sink` (idempotent ClickHouse inserts), with
:mod:`~runstream.consumer.dlq` for what can never be stored. Beside it run the monitors
:mod:`~runstream.consumer.liveness` (CRASHED detection) and
:mod:`~runstream.consumer.progress` (ingest progress). :mod:`~runstream.consumer.factories`
wires them together for the CLI. The tables are the contract in
:mod:`runstream.proto.tables`.

Importing this package loads nothing: each module imports only what it needs.
"""
