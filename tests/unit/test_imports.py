"""What importing each public module loads: the SDK, the tables and the query client stay
light, and the CLI loads neither grpcio nor ClickHouse until a command needs them."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light():
    code = ("import runstream, sys; "
            "assert 'grpc' not in sys.modules and 'clickhouse_connect' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_tables_loads_no_client_library() -> None:
    code = (
        "import sys, runstream.proto.tables;"
        "heavy = ('clickhouse_connect', 'chdb', 'kafka', 'numpy', 'pyarrow', 'grpc');"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & set(heavy));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_importing_the_client_pulls_in_no_clickhouse() -> None:
    code = (
        "import sys, runstream.query, runstream.query.client;"
        "bad = [m for m in sys.modules if m.startswith(('clickhouse_connect', 'chdb'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def loaded(*modules: str) -> list[str]:
    """The heavy top-level packages a fresh interpreter has loaded after importing these."""
    code = (
        f"import sys, {', '.join(modules)};"
        "heavy = {'clickhouse_connect', 'chdb', 'kafka', 'numpy', 'pyarrow', 'grpc'};"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return done.stdout.split()


def test_the_cli_and_the_query_models_load_no_grpc_or_clickhouse() -> None:
    # `runstream sync` and every read command start from runstream.cli.main; the client
    # loads grpcio only when a read command opens one.
    assert loaded("runstream.cli.main") == []
    assert loaded("runstream.query.models", "runstream.query.filters") == []
    assert loaded("runstream.consumer.liveness") == []


def test_the_sdk_and_the_integrations_package_import_no_framework() -> None:
    # Each integration module imports its framework; the package and the SDK import none.
    code = (
        "import sys, runstream, runstream.integrations, runstream.integrations._common;"
        "frameworks = {'torch', 'lightning', 'pytorch_lightning', 'transformers', 'keras',"
        " 'jax', 'tensorflow', 'accelerate'};"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & frameworks)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == []
