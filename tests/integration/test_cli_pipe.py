"""The CLI in a pipe whose reader stops early (``runstream history ... | head``): a real
subprocess against a real query server; it exits 141 (128 + SIGPIPE, as a shell reports
for ``cat`` or ``git``) without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import grpc

from runstream.cli.main import EXIT_BROKEN_PIPE
from runstream.proto import tables
from tests.factories import insert, points, start_rank


def _cli(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "runstream.cli.main", *args, "--addr", f"127.0.0.1:{port}"]


def test_piping_into_head_exits_quietly(ch: Any, server: tuple[grpc.Server, int]) -> None:
    start_rank(ch, "big", 0, 1, 1_700_000_000_000)
    insert(ch, tables.METRICS, points("big", "loss", 0, range(40_000)))  # ~2 MB of text
    for args in (["history", "big", "loss"], ["history", "big", "loss", "--json"]):
        writer = subprocess.Popen(_cli(server[1], *args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        assert writer.stdout is not None
        reader = subprocess.run(["head", "-n", "2"], stdin=writer.stdout, capture_output=True,
                                timeout=120, check=True)
        writer.stdout.close()  # only head holds the read end, and head has exited
        _, err = writer.communicate(timeout=120)
        assert len(reader.stdout.splitlines()) == 2
        assert writer.returncode == EXIT_BROKEN_PIPE, err
        assert b"Traceback" not in err and b"BrokenPipe" not in err and err == b""


def test_a_reader_gone_before_the_first_write_exits_quietly(
    ch: Any, server: tuple[grpc.Server, int]
) -> None:
    start_rank(ch, "small", 0, 1, 1_700_000_000_000)
    read_end, write_end = os.pipe()
    os.close(read_end)  # even one short line, buffered until exit, meets a closed pipe
    try:
        done = subprocess.run(_cli(server[1], "show", "small"), stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120, check=False)
    finally:
        os.close(write_end)
    assert done.returncode == EXIT_BROKEN_PIPE and done.stderr == b""
