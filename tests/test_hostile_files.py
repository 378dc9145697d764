"""The filesystem and import rules: medharness replaces or deletes only folders it made (marked,
never through a link), whatever sits at the hidden staging path of the folder it is making;
rescore starts only from logs the gate would accept, and neither rescore nor the playground
sends a key where only a run folder points."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai_stub
import pytest
import yaml
from openai_stub import Stub, StubState, serve

from medharness.cli import main
from medharness.core.errors import UserError
from medharness.core.folders import whole_or_absent
from medharness.core.rundir import RESCORING
from medharness.playground import Playground
from medharness.reports import view_app


def user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("the user's own")
    return path


def test_a_users_folder_at_the_staging_path_is_refused_and_kept(tmp_path: Path) -> None:
    theirs = user_folder(tmp_path / ".export.partial")
    with (
        pytest.raises(UserError, match="is not a medharness run directory"),
        whole_or_absent(tmp_path / "export"),
    ):
        pass
    assert (theirs / "notes.txt").read_text() == "the user's own"
    assert not (tmp_path / "export").exists()


def test_a_link_at_the_staging_path_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    elsewhere = user_folder(tmp_path / "elsewhere")
    (tmp_path / ".export.partial").symlink_to(elsewhere)
    with pytest.raises(UserError, match="is a symbolic link"), whole_or_absent(tmp_path / "export"):
        pass
    assert [p.name for p in elsewhere.iterdir()] == ["notes.txt"]


def test_a_staging_folder_medharness_left_is_replaced_and_the_result_unmarked(
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError), whole_or_absent(tmp_path / "export") as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed half-way")
    assert not (tmp_path / ".export.partial").exists()  # ours: removed
    with whole_or_absent(tmp_path / "export") as staging:
        (staging / "whole.txt").write_text("whole")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["whole.txt"]


def test_a_dangling_link_at_the_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "export").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="already exists"), whole_or_absent(tmp_path / "export"):
        pass
    assert (tmp_path / "export").is_symlink()


def test_rescore_refuses_a_run_whose_logs_the_gate_would_refuse(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = finished_run / "samples" / "base" / "medqa_4opt.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    wrong = next(row for row in rows if row["metrics"]["acc"] == 0.0)
    wrong["metrics"]["acc"] = 1.0  # a hand-edited answer
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before = (finished_run / "results.json").read_bytes()
    assert main(["gate", str(finished_run), "--policy", str(write_policy(finished_run))]) == 2
    capsys.readouterr()
    assert main(["rescore", str(finished_run), "--metrics", "rougeL"]) == 2
    assert capsys.readouterr().err.startswith("medharness: error: ")
    assert (finished_run / "results.json").read_bytes() == before  # nothing rewritten


def write_policy(run: Path) -> Path:
    policy = run.parent / "policy.yaml"
    policy.write_text(yaml.safe_dump({"min_samples": 1, "required_tasks": ["medqa_4opt"]}))
    return policy


def test_rescore_never_writes_its_marker_through_a_planted_link(
    finished_run: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (finished_run / RESCORING).symlink_to(victim)
    assert main(["rescore", str(finished_run), "--metrics", "rougeL"]) == 2
    assert victim.read_text() == "untouched"


def test_rescore_sends_no_key_to_a_judge_server_only_the_run_folder_names(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((finished_run / "manifest.json").read_text())
    manifest["config"]["judges"] = [
        {"name": "j", "model": "openai:grader", "base_url": "http://127.0.0.1:9/v1",
         "api_key_env": "MY_GRADER_KEY"}
    ]  # fmt: skip
    (finished_run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["rescore", str(finished_run)]) == 2
    err = capsys.readouterr().err
    assert "would send $MY_GRADER_KEY to http://127.0.0.1:9/v1" in err and "--judges" in err


@pytest.mark.parametrize("command", ["publish", "report", "export"])
def test_a_link_inside_a_run_folder_is_never_followed(
    finished_run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("hf_secret_token_value\n")
    log = finished_run / "samples" / "base" / "medqa_4opt.jsonl"
    log.unlink()
    log.symlink_to(token)  # the run folder came from someone else
    out = tmp_path / "out"
    argv = {
        "publish": [
            "publish",
            str(finished_run),
            "--hub",
            "me/run",
            "--folder",
            str(out),
            "--dry-run",
        ],
        "report": ["report", str(finished_run), "-o", str(tmp_path / "r.html")],
        "export": ["export", str(finished_run), "--format", "lm-eval", "-o", str(out)],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and "hf_secret" not in err
    copied = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and p != token]
    assert not any("hf_secret" in p.read_text(errors="replace") for p in copied)


def exported(finished_run: Path, tmp_path: Path) -> Path:
    """The run as lm-eval's output folder, to be tampered with."""
    out = tmp_path / "lm-eval"
    assert main(["export", str(finished_run), "--format", "lm-eval", "-o", str(out)]) == 0
    return out


def edit_samples(folder: Path, task: str, edit: Callable[[list[dict[str, Any]]], None]) -> None:
    path = next(folder.glob(f"base/samples_{task}_*.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def flip_an_acc(rows: list[dict[str, Any]]) -> None:
    rows[0]["acc"] = 1.0 - float(rows[0]["acc"])


def repeat_a_line(rows: list[dict[str, Any]]) -> None:
    rows.extend([rows[0]] * 10)


def odd_doc_id(rows: list[dict[str, Any]]) -> None:
    rows[0]["doc_id"] = "first"


def odd_target(rows: list[dict[str, Any]]) -> None:
    rows[0]["target"] = 99


LM_EVAL_TAMPERING = {  # what was done to the samples file -> what the one line says
    "flip_an_acc": (flip_an_acc, "disagrees with its log-likelihoods, which pick option"),
    "repeat_a_line": (repeat_a_line, "appears more than once; each question is one sample"),
    "odd_doc_id": (odd_doc_id, "not a samples file of lm-eval --log_samples"),
    "odd_target": (odd_target, "not a samples file of lm-eval --log_samples"),
}


@pytest.mark.parametrize("tampering", list(LM_EVAL_TAMPERING))
def test_an_lm_eval_folder_is_recomputed_and_refused_where_it_disagrees_or_repeats(
    finished_run: Path, tmp_path: Path, tampering: str, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, says = LM_EVAL_TAMPERING[tampering]
    folder = exported(finished_run, tmp_path)
    edit_samples(folder, "medqa_4opt", edit)
    capsys.readouterr()
    assert main(["report", str(folder), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


@pytest.mark.parametrize("date", ["yesterday", 1e300, None, [1]])
def test_an_lm_eval_results_file_with_an_odd_date_still_reads(
    finished_run: Path, tmp_path: Path, date: object
) -> None:
    folder = exported(finished_run, tmp_path)
    results = next(folder.glob("base/results_*.json"))
    data = json.loads(results.read_text())
    data["date"] = date
    results.write_text(json.dumps(data))
    assert main(["report", str(folder), "-o", str(tmp_path / "r.html")]) == 0


def test_an_lm_eval_results_file_of_another_shape_is_one_line(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = exported(finished_run, tmp_path)
    results = next(folder.glob("base/results_*.json"))
    data = json.loads(results.read_text())
    data["configs"] = ["not", "a", "mapping"]
    results.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["report", str(folder), "-o", str(tmp_path / "r.html")]) == 2
    assert "not an lm-eval results file" in capsys.readouterr().err


@pytest.fixture
def stub() -> Iterator[Stub]:
    yield from serve(StubState())


def with_served_model(run: Path, url: str) -> Path:
    """The run's manifest edited, as anyone may edit a folder they send: one more model, on
    a server that wants the user's key."""
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["models"].append(
        {"name": "served", "model": "openai:stub", "base_url": url, "api_key_env": "MY_KEY"}
    )
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_the_playground_sends_no_key_to_a_server_only_the_run_folder_names(
    finished_run: Path,
    stub: Stub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MY_KEY", "sk-mine-0123456789")
    monkeypatch.setattr(view_app, "serve", lambda *args: None)  # never listens here
    run = with_served_model(finished_run, stub.url)
    assert main(["view", str(run), "--playground"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"would send $MY_KEY to {stub.url}" in err, err
    assert "--endpoint" in err and "sk-mine" not in err
    with pytest.raises(UserError, match="a server only the run folder names"):
        Playground.of_run(run, ["http://127.0.0.1:9/v1"])  # another server named
    assert stub.state.requests == []


def test_the_playground_sends_the_key_to_a_server_the_user_names_again(
    finished_run: Path, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_KEY", "sk-mine-0123456789")
    playground = Playground.of_run(with_served_model(finished_run, stub.url), [f"{stub.url}/"])
    served = next(entry for entry in playground.entries if entry.name == "served")
    assert playground.model(served).generate(["What is (are) Condition 1 ?"], 8)[0]
    sent = [r["headers"].get("Authorization") for r in stub.state.requests]
    assert sent and set(sent) == {"Bearer sk-mine-0123456789"}


def test_a_server_that_echoes_the_key_in_its_answers_gets_it_into_no_file(
    data_env: Path,
    stub: Stub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "sk-mine-0123456789"
    monkeypatch.setenv("MY_KEY", key)
    monkeypatch.setattr(openai_stub, "chat_reply", lambda message: f"your key is {key}.")
    args = ["eval", "--model", "openai:stub", "--base-url", stub.url, "--api-key-env", "MY_KEY"]
    out = tmp_path / "runs"
    assert main([*args, "--tasks", "medquad_gen", "--limit", "2", "--out", str(out)]) == 0
    assert key not in capsys.readouterr().out
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written and not [p for p in written if key in p.read_text(errors="replace")]
    assert any("your key is [redacted]" in p.read_text() for p in written)


def edited_log(
    run: Path, model: str, task: str, edit: Callable[[list[dict[str, Any]]], None]
) -> None:
    path = run / "samples" / model / f"{task}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def swap_acc(rows: list[dict[str, Any]]) -> None:
    """One right and one wrong answer trade accuracies: the aggregate stays the same."""
    right = next(r for r in rows if r["metrics"]["acc"] == 1.0)
    wrong = next(r for r in rows if r["metrics"]["acc"] == 0.0)
    right["metrics"]["acc"], wrong["metrics"]["acc"] = 0.0, 1.0


def swap_choice(rows: list[dict[str, Any]]) -> None:
    """A wrong answer marked right by changing its choice alone, and a right one wrong."""
    right = next(r for r in rows if r["metrics"]["acc"] == 1.0)
    wrong = next(r for r in rows if r["metrics"]["acc"] == 0.0)
    right["chosen"], wrong["chosen"] = (right["gold"] + 1) % 4, wrong["gold"]
    right["metrics"]["acc"], wrong["metrics"]["acc"] = 0.0, 1.0


def repeat_first(rows: list[dict[str, Any]]) -> None:
    """The last sample replaced by a second copy of the first: n stays the same."""
    rows[-1] = rows[0]


EDITED_LOGS = {
    "acc traded": (swap_acc, "acc 0, but chosen"),
    "choice against the log-likelihoods": (swap_choice, "but the most likely option is"),
    "one id twice": (repeat_first, "repeats line 1"),
}


@pytest.mark.parametrize("edit", EDITED_LOGS)
@pytest.mark.parametrize("command", ["gate", "report", "leaderboard", "rescore"])
def test_a_sample_log_that_contradicts_itself_is_refused_everywhere(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, command: str
) -> None:
    """Edits that leave every aggregate as it was: only the rows' own raw numbers tell."""
    change, says = EDITED_LOGS[edit]
    for model in ("base", "other"):
        edited_log(finished_run, model, "medmcqa", change)
    args = {
        "gate": ["gate", str(finished_run), "--policy", "examples/gate.yaml"],
        "report": ["report", str(finished_run), "-o", str(tmp_path / "r.html")],
        "leaderboard": ["leaderboard", str(finished_run), "-o", str(tmp_path / "l.html")],
        "rescore": ["rescore", str(finished_run), "--metrics", "rouge1"],
    }[command]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "medmcqa.jsonl:" in err and says in err, err


@pytest.mark.parametrize("where", ["results.json", "samples/base/medmcqa.jsonl"])
def test_a_number_past_python_s_digit_limit_is_one_line(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    path = finished_run / where
    text = path.read_text()
    field = '"n": ' if where == "results.json" else '"chosen_probability": '
    start = text.index(field) + len(field)
    end = start + len(text[start:].split(",", 1)[0].split("\n", 1)[0])
    path.write_text(text[:start] + "9" * 5000 + text[end:])
    assert main(["report", str(finished_run), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{where}" in err and "not valid JSON" in err, err
