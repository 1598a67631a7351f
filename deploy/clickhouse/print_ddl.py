"""Print Runstream's ClickHouse DDL, generated from runstream.proto.tables (the one source).

    python deploy/clickhouse/print_ddl.py                       # single node
    python deploy/clickhouse/print_ddl.py --cluster main        # Replicated* + Distributed
    python deploy/clickhouse/print_ddl.py --cluster main --database rs | clickhouse-client -n
    python deploy/clickhouse/print_ddl.py --cluster main --upgrade   # upgrade a cluster

The single-node form is what the consumer runs itself at start (CREATE ... IF NOT
EXISTS, then ADD COLUMN IF NOT EXISTS for what an older store lacks). On a cluster, run
the printed statements once (they are ON CLUSTER) before the first consumer starts; the
consumer's own single-node DDL then finds every table there. ``--upgrade`` prints what
brings a cluster made by an older Runstream up to date: the same CREATE ... IF NOT EXISTS
(new tables), then ALTER TABLE ... ON CLUSTER ... ADD COLUMN IF NOT EXISTS of every column
on each ``<table>_local`` and its Distributed ``<table>``, and the deduplication window
setting; all of it is safe to run again. It ends with the per-shard copies into the
tables fed by views that the older schema lacked, as comments: run them once on one
replica of each shard.
"""

from __future__ import annotations

import argparse
import sys

from runstream.proto import tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="runstream", help="database name (runstream)")
    parser.add_argument("--cluster", help="cluster name from remote_servers: cluster DDL")
    parser.add_argument("--upgrade", action="store_true",
                        help="with --cluster: upgrade an existing cluster's schema")
    args = parser.parse_args(argv)
    if args.upgrade and not args.cluster:
        parser.error("--upgrade needs --cluster: a single node upgrades itself at consumer"
                     " start")
    if args.upgrade:
        statements = tables.cluster_upgrade_ddl(args.database, args.cluster)
    elif args.cluster:
        statements = tables.cluster_ddl(args.database, args.cluster)
    else:
        statements = tables.all_ddl(args.database)
    for statement in statements:
        print(statement + ";\n")
    if args.upgrade:
        # INSERTs are not ON CLUSTER: each shard copies its own rows, once.
        print("-- Then, on one replica of each shard, once (tables fed by views that an older"
              " schema lacked):")
        for statement in (tables.backfill_ddl(args.database, tables.LOCAL_SUFFIX),
                          tables.blocks_backfill_ddl(args.database, tables.LOCAL_SUFFIX)):
            print(f"-- {statement};")
    return 0


if __name__ == "__main__":
    sys.exit(main())
