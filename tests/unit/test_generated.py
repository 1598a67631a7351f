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


def test_protoc_needs_only_the_proto_folder(tmp_path: Path) -> None:
    # What a client in another language runs: the repository's own folder as the one
    # include path, the .proto files where their imports say they are.
    for name in ("events.proto", "query.proto"):
        done = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}",
             f"proto/runstream/proto/v1/{name}"],
            cwd=REPO, capture_output=True, text=True,
        )
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "runstream" / "proto" / "v1" / "query_pb2.py").is_file()
