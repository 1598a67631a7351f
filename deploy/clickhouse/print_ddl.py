"""Print Runstream's ClickHouse DDL, generated from runstream.proto.tables (the one source).

    python deploy/clickhouse/print_ddl.py                       # single node
    python deploy/clickhouse/print_ddl.py --cluster main        # Replicated* + Distributed
    python deploy/clickhouse/print_ddl.py --cluster main --database rs | clickhouse-client -n

The single-node form is what the consumer runs itself at start (CREATE ... IF NOT
EXISTS). On a cluster, run the printed statements once (they are ON CLUSTER) before the
first consumer starts; the consumer's own single-node DDL then finds every table there.
"""

from __future__ import annotations

import argparse
import sys

from runstream.proto import tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="runstream", help="database name (runstream)")
    parser.add_argument("--cluster", help="cluster name from remote_servers: cluster DDL")
    args = parser.parse_args(argv)
    statements = (tables.cluster_ddl(args.database, args.cluster) if args.cluster
                  else tables.all_ddl(args.database))
    for statement in statements:
        print(statement + ";\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
