"""The committed generated code is exactly what the pinned generator produces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(REPO / "proto" / "generate.sh"), str(tmp_path)], env=env, check=True)
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == ["events_pb2.py", "events_pb2.pyi", "query_pb2.py", "query_pb2.pyi",
                         "query_pb2_grpc.py"]
    for name in generated:
        committed = (REPO / "proto" / "runstream" / "proto" / "v1" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: run `make proto`"
