"""runstream tag / note / archive, and what show and runs print of attempts, notes,
changes, archived runs and forks: argument parsing, key=value parsing, the Annotation
event, sending it to the spool (a real spool directory, no network), and the texts."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from runstream import annotate
from runstream.annotate import RunChange, annotation_event, parse_tags, send_annotation
from runstream.cli import annotate as cli_annotate
from runstream.cli import main as cli_main
from runstream.cli import runs
from runstream.config import ProducerConfig
from runstream.proto import codec, spool
from runstream.proto.errors import (
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from runstream.proto.v1 import events_pb2 as pb
from runstream.proto.validation import MAX_TAG_VALUE_LEN, MAX_TEXT_LEN, MAX_WHO_LEN
from runstream.query.models import (
    Attempt,
    Change,
    Note,
    RankInfo,
    Run,
)
from tests.factories import T0, run_info

# --- key=value ---------------------------------------------------------------------------


def test_key_value_pairs_split_at_the_first_equals_sign() -> None:
    assert parse_tags(["model=bert", "expr=a=b", "empty=", "ü=☃"]) == (
        ("model", "bert"), ("expr", "a=b"), ("empty", ""), ("ü", "☃"))


@pytest.mark.parametrize(("items", "message"), [
    (["model"], "expected key=value"),
    (["=bert"], "tag key before '=' is empty"),
    (["k" * 251 + "=v"], "must be a string of 1..250 characters"),
    (["k=" + "v" * (MAX_TAG_VALUE_LEN + 1)], f"expected 0..{MAX_TAG_VALUE_LEN}"),
    (["a=1", "a=2"], "given more than once"),
    (["k\udcff=v"], "not valid Unicode"),
])
def test_bad_key_value_pairs_are_refused_naming_the_problem(items: list[str],
                                                           message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_tags(items)


def test_a_change_must_change_something_within_the_limits() -> None:
    with pytest.raises(InvalidArgumentError, match="nothing to change"):
        RunChange()
    with pytest.raises(InvalidArgumentError, match=f"expected 0..{MAX_TEXT_LEN}"):
        RunChange(note="n" * (MAX_TEXT_LEN + 1))
    with pytest.raises(InvalidArgumentError, match="archive action 'DELETE'"):
        RunChange(archive="DELETE")
    assert RunChange(note="n" * MAX_TEXT_LEN).note


# --- argument parsing ---------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return cli_main.build_parser().parse_args(list(argv))


def test_tag_note_archive_arguments() -> None:
    args = parse("tag", "r1", "a=1", "b=2", "--kafka", "h:9092", "--spool-dir", "/s")
    assert (args.run_id, args.tags, args.kafka, args.spool_dir) == ("r1", ["a=1", "b=2"],
                                                                   "h:9092", Path("/s"))
    assert cli_annotate.change_of(args) == RunChange(tags=(("a", "1"), ("b", "2")))
    assert cli_annotate.change_of(parse("note", "r1", "lr too high")).note == "lr too high"
    assert cli_annotate.change_of(parse("archive", "r1")).archive == "ARCHIVE"
    assert cli_annotate.change_of(parse("archive", "r1", "--restore")).archive == "RESTORE"
    with pytest.raises(InvalidArgumentError, match="the note is empty"):
        cli_annotate.change_of(parse("note", "r1", "  "))
    with pytest.raises(SystemExit):
        parse("tag", "r1")  # at least one key=value


def test_runs_view_flags() -> None:
    assert parse("runs").view == runs.ACTIVE_ONLY
    assert parse("runs", "--archived").view == runs.ARCHIVED_ONLY
    assert parse("runs", "--all").view == runs.ALL
    with pytest.raises(SystemExit):
        parse("runs", "--all", "--archived")
    assert parse("show", "r1", "--all-attempts").all_attempts


def test_artifact_command_arguments() -> None:
    args = parse("download", "r1", "model.pt", "--out", "m.pt", "--force", "--sha256", "ab")
    assert (args.run_id, args.name, args.out, args.force, args.sha256) == (
        "r1", "model.pt", Path("m.pt"), True, "ab")
    assert not parse("download", "r1", "model.pt").force
    assert parse("artifacts", "r1", "--json").json
    assert parse("lineage", "model.pt").target == "model.pt"


def test_a_bad_tag_is_an_error_at_the_call_before_anything_is_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTREAM_SPOOL_DIR", str(tmp_path / "spool"))
    # Port 9 (discard): nothing answers there; the error comes before any call.
    assert cli_main.main(["tag", "r1", "oops", "--addr", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "runstream: error: 'oops': expected key=value" in err
    assert not (tmp_path / "spool").exists()


# --- the event, and sending it --------------------------------------------------------------


def test_the_annotation_event_has_an_envelope_of_its_own() -> None:
    change = RunChange(tags=(("reviewed", "yes"),), note="ok", archive="ARCHIVE")
    event = annotation_event("r1", "exp", change, user="ada", host="ws-1", ts_ms=T0)
    assert (event.run_id, event.experiment, event.rank, event.world_size, event.seq,
            event.node, event.ts_ms) == ("r1", "exp", 0, 1, 1, "ws-1", T0)
    assert len(event.producer_id) == 32
    other = annotation_event("r1", "exp", change, user="ada", host="ws-1")
    assert other.producer_id != event.producer_id
    a = event.annotation
    assert ([(t.key, t.value) for t in a.tags], a.note, a.archive, a.user, a.host) == (
        [("reviewed", "yes")], "ok", pb.ARCHIVE, "ada", "ws-1")
    with pytest.raises(ValidationError, match=r"user must be 1\.\.256"):
        annotation_event("r1", "exp", change, user="u" * (MAX_WHO_LEN + 1), host="h")
    with pytest.raises(InvalidArgumentError, match="run_id='bad id'"):
        annotation_event("bad id", "exp", change, user="u", host="h")


def test_who_is_the_os_user_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(annotate.getpass, "getuser", lambda: "ada")
    monkeypatch.setattr(annotate.socket, "gethostname", lambda: "ws-1.example")
    assert (annotate.current_user(), annotate.current_host()) == ("ada", "ws-1.example")

    def no_user() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(annotate.getpass, "getuser", no_user)
    assert annotate.current_user().startswith("uid ")
    monkeypatch.setattr(annotate.socket, "gethostname", lambda: "h" * 300)
    assert len(annotate.current_host()) == MAX_WHO_LEN


def spooled_events(directory: Path) -> list[pb.RunEvent]:
    out = []
    for path in sorted(directory.glob("*.spool")):
        for item in spool.scan(path.read_bytes()):
            assert not isinstance(item, spool.Damage)
            out.append(codec.decode(item.payload))
    return out


def config(tmp_path: Path, **kw: Any) -> ProducerConfig:
    return ProducerConfig(spool_dir=tmp_path / "spool", artifacts_dir=tmp_path / "art", **kw)


@pytest.mark.parametrize("encoding", ["protobuf", "avro"])
def test_without_kafka_the_change_is_fsynced_into_a_published_spool_file(
    tmp_path: Path, encoding: str
) -> None:
    change = RunChange(tags=(("model", "bert"),))
    sent = send_annotation("r1", "exp", change, config(tmp_path, encoding=encoding),
                           user="ada", host="ws-1")
    assert (sent.destination, sent.where) == ("spool", str(tmp_path / "spool"))
    assert not list((tmp_path / "spool").glob("*.part"))
    (event,) = spooled_events(tmp_path / "spool")
    assert event == sent.event
    assert event.annotation.user == "ada" and event.annotation.tags[0].value == "bert"


def test_a_spool_that_cannot_be_written_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    with pytest.raises(UnavailableError, match="could not be made durable: spool write failed"):
        send_annotation("r1", "exp", RunChange(note="n"), config(tmp_path), user="u", host="h")


class FakeClient:
    target = "127.0.0.1:50051"

    def __init__(self, run: Run | Exception) -> None:
        self.run = run
        self.asked: list[str] = []

    def get_run(self, run_id: str) -> Run:
        self.asked.append(run_id)
        if isinstance(self.run, Exception):
            raise self.run
        return self.run


def annotate_args(tmp_path: Path, *argv: str) -> argparse.Namespace:
    return parse(*argv, "--spool-dir", str(tmp_path / "spool"))


def test_cmd_annotate_sends_with_the_runs_experiment(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNSTREAM_KAFKA", raising=False)
    client: Any = FakeClient(Run(info=run_info(run_id="r1", experiment="vision")))
    out, err = io.StringIO(), io.StringIO()
    args = annotate_args(tmp_path, "note", "r1", "lr too high\nafter step 40")
    assert cli_annotate.cmd_annotate(client, args, out=out, err=err) == 0, err.getvalue()
    assert client.asked == ["r1"]
    (event,) = spooled_events(tmp_path / "spool")
    assert (event.experiment, event.annotation.note) == ("vision", "lr too high\nafter step 40")
    assert event.annotation.user == annotate.current_user()
    line = out.getvalue()
    assert line.startswith("run r1: note added (by ") and "written to the spool" in line


@pytest.mark.parametrize(("error", "message"), [
    (NotFoundError("run 'zz' not found"), "no run 'zz' is known to the query service"),
    (UnavailableError("failed to connect to all addresses"),
     "the query service at 127.0.0.1:50051 is not reachable (failed to connect"),
])
def test_cmd_annotate_sends_nothing_when_the_run_cannot_be_read(
    tmp_path: Path, error: Exception, message: str
) -> None:
    client: Any = FakeClient(error)
    err = io.StringIO()
    args = annotate_args(tmp_path, "archive", "zz")
    assert cli_annotate.cmd_annotate(client, args, out=io.StringIO(), err=err) == 1
    assert message in err.getvalue() and "nothing was sent" in err.getvalue()
    assert not (tmp_path / "spool").exists()


def test_sent_text_says_where_the_change_went() -> None:
    change = RunChange(tags=(("a", "1"),), archive="RESTORE")
    event = annotation_event("r1", "e", change, user="ada", host="ws")
    kafka = annotate.Sent(destination="kafka", where="h:9092 topic t", event=event)
    assert cli_annotate.sent_text("r1", change, kafka, "h:9092") == (
        "run r1: tags set: a=1; restored (no longer archived) (by ada@ws; sent to Kafka "
        "h:9092 topic t)")
    spooled = annotate.Sent(destination="spool", where="/s", event=event)
    assert "Kafka h:9092 did not answer: kept in the spool /s; `runstream sync` sends it" in (
        cli_annotate.sent_text("r1", change, spooled, "h:9092"))


# --- show and runs ------------------------------------------------------------------------


def annotated_run() -> Run:
    return Run(
        info=run_info(archived=True, fork_run_id="parent", fork_step=40, attempts=2,
                      status="RUNNING", end_ms=0),
        attempts=(
            Attempt(attempt=0, restart=0, world_size=8, ranks=tuple(range(8)), status="CRASHED",
                    start_ms=T0, end_ms=T0 + 60_000, error="Traceback\nRuntimeError: NCCL"),
            Attempt(attempt=1, restart=1, world_size=4, ranks=(0, 1, 2, 3), status="RUNNING",
                    start_ms=T0 + 120_000),
        ),
        ranks=(RankInfo(rank=0, local_rank=0, node="n0", status="CRASHED", start_ms=T0,
                        end_ms=T0 + 60_000, error="", attempt=0),
               RankInfo(rank=0, local_rank=0, node="n1", status="RUNNING", start_ms=T0 + 120_000,
                        end_ms=0, error="", attempt=1)),
        notes=(Note(text="lr too high\nafter step 40", user="ada", host="ws-1", ts_ms=T0),),
        changes=(Change(ts_ms=T0, user="ada", host="ws-1", what="note"),
                 Change(ts_ms=T0 + 1000, user="bob", host="ws-2", what="archive")),
    )


def test_show_text_has_attempts_notes_changes_archived_and_fork() -> None:
    text = runs.run_text(annotated_run(), T0 + 200_000)
    head = text.split("\n\n")[0]
    assert {line.split()[0]: line.split()[-1] for line in head.splitlines()[1:]
            if line.split()[0] in ("attempts", "archived", "fork")} == {
        "attempts": "2", "archived": "yes", "fork": "parent@40"}
    notes = text.split("\nNotes\n")[1].split("\n\n")[0].splitlines()
    assert notes == ["  2023-11-14 22:13:20 UTC  ada@ws-1", "    lr too high",
                     "    after step 40"]
    attempts = text.split("\nAttempts\n")[1].split("\n\n")[0].splitlines()
    assert attempts[0].split() == ["ATTEMPT", "HOW", "WORLD", "RANKS", "STATUS", "STARTED",
                                   "(UTC)", "ENDED", "(UTC)", "ERROR"]
    assert attempts[1].split()[:5] == ["0", "start", "8", "8", "CRASHED"]
    assert attempts[1].endswith("RuntimeError: NCCL")
    assert attempts[2].split()[:6] == ["1", "restart", "1", "4", "4", "RUNNING"]
    ranks = text.split("\nRanks\n")[1].split("\n\n")[0].splitlines()
    assert ranks[0].split()[:2] == ["ATTEMPT", "RANK"]
    assert [r.split()[:3] for r in ranks[1:]] == [["0", "0", "n0"], ["1", "0", "n1"]]
    changes = text.split("\nChanges\n")[1].splitlines()
    assert [c.split()[2:] for c in changes[1:]] == [["ada@ws-1", "note"], ["bob@ws-2", "archive"]]


def test_show_text_of_a_plain_run_says_none() -> None:
    text = runs.run_text(Run(info=run_info()), T0)
    assert "\nNotes\n  (none)" in text and "\nChanges\n  (none)" in text
    assert "\nAttempts\n  (none)" in text
    assert "archived    no" in text and "fork of     -" in text


def test_show_json_has_the_new_fields(capsys: pytest.CaptureFixture[str]) -> None:
    client: Any = FakeClient(annotated_run())
    assert runs.cmd_show(client, "r1", True) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["info"]["archived"] is True and shown["info"]["fork_step"] == 40
    assert shown["notes"][0] == {"text": "lr too high\nafter step 40", "user": "ada",
                                 "host": "ws-1", "ts_ms": T0}
    assert [c["what"] for c in shown["changes"]] == ["note", "archive"]
    assert shown["attempts"][1]["ranks"] == [0, 1, 2, 3]


def test_runs_table_flags_archived_attempts_and_forks() -> None:
    text = runs.runs_table([run_info(), run_info(run_id="r2", archived=True, attempts=3,
                                                 fork_run_id="p", fork_step=7)], T0 + 1)
    header, plain, flagged = text.splitlines()
    assert header.endswith("FLAGS") and plain.endswith("1h02m")
    assert flagged.endswith("archived, attempts 3, fork of p@7")


class SearchClient:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def iter_runs(self, experiment: str | None, page_size: int = 100,
                  **search: Any) -> Any:
        self.calls.append(search)
        return iter([run_info()])


@pytest.mark.parametrize(("argv", "view"), [
    ((), None), (("--archived",), "ARCHIVED_ONLY"), (("--all",), "ALL")])
def test_runs_view_reaches_the_search(argv: tuple[str, ...], view: str | None,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    client = SearchClient()
    args = parse("runs", *argv)
    assert args.read(client, args) == 0
    assert client.calls[0].get("view") == view
    assert "r1" in capsys.readouterr().out


def test_an_empty_listing_says_archived_runs_are_hidden(
        capsys: pytest.CaptureFixture[str]) -> None:
    class Empty:
        def iter_runs(self, experiment: str | None, page_size: int = 100, **_: Any) -> Any:
            return iter([])

    client: Any = Empty()
    assert runs.cmd_runs(client, None, 10, False) == 0
    assert capsys.readouterr().out == "no runs (archived runs are hidden: --all shows them)\n"
    assert runs.cmd_runs(client, None, 10, False, view=runs.ALL) == 0
    assert capsys.readouterr().out == "no runs\n"
