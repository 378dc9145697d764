"""`medharness view`: the viewer's filters checked against the sample logs, then the real app
in headless Chromium (a filter applied through a link, the rows read from the page, model markup
shown as text, a screenshot kept), and the playground answering with every model of a run:
the fake model here, the two quickstart models on the built-in model in the slow test."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser import CHROMIUM, Page, chromium_page
from conftest import MEDQA_ROWS, REAL_DATA

from medharness.cli import main
from medharness.playground import Playground
from medharness.reports.viewer import DISAGREE, PROBABILITY, Viewer, render

ROOT = Path(__file__).resolve().parents[1]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
COUNT = "document.querySelector('#samples p.count')?.textContent"
ROWS = "[...document.querySelectorAll('#samples section.sample')].map(s => s.dataset.doc)"
ANSWERS = (
    "JSON.stringify([...document.querySelectorAll('[id^=answer-] textarea')].map(t => t.value))"
)
MARKUP = "Ask a doctor. <script>alert('x')</script><img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def two_minds(tmp_path_factory: pytest.TempPathFactory, fixture_data: Path) -> Path:
    """A run of two fake models that pick the same option on even MedQA questions and
    different ones on odd questions, and write markup in their free-text answers."""
    work = tmp_path_factory.mktemp("viewer")
    right = [
        {"match": f"symptom {i}.", "answer": row["answer_idx"]} for i, row in enumerate(MEDQA_ROWS)
    ]
    flipped = [
        {
            "match": rule["match"],
            "answer": rule["answer"]
            if i % 2 == 0
            else "ABCD"[("ABCD".index(rule["answer"]) + 1) % 4],
        }
        for i, rule in enumerate(right)
    ]
    models = []
    for name, rules in (("steady", right), ("flipper", flipped)):
        script = {"choose": rules, "default_output": MARKUP}
        if name == "flipper":
            script["generate"] = [{"match": "Condition 1 ", "output": "Condition 1 is rare."}]
        (work / f"{name}.yaml").write_text(yaml.safe_dump(script), encoding="utf-8")
        models.append({"name": name, "model": f"fake:{work / name}.yaml"})
    config = {
        "name": "minds",
        "data_dir": str(fixture_data),
        "bootstrap_resamples": 200,
        "models": models,
        "tasks": ["medqa_4opt", "medquad_gen"],
    }
    (work / "minds.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(work / "minds.yaml"), "--out", str(work / "runs")]) == 0
    return work / "runs" / "minds"


def logged(run: Path, model: str, task: str) -> list[dict[str, Any]]:
    path = run / "samples" / model / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def differing_choices(run: Path, models: list[str]) -> list[str]:
    """The questions whose chosen options differ, straight from the sample logs."""
    logs = [{row["doc_id"]: row["chosen"] for row in logged(run, m, "medqa_4opt")} for m in models]
    return [doc for doc in logs[0] if len({log[doc] for log in logs}) > 1]


def test_the_filters_select_what_the_sample_logs_say(two_minds: Path) -> None:
    viewer = Viewer.open([two_minds])
    disagree = [s.doc_id for s in viewer.select("medqa_4opt", DISAGREE)]
    assert disagree == differing_choices(two_minds, ["steady", "flipper"])
    assert 0 < len(disagree) < len(viewer.samples("medqa_4opt"))
    for model in ("steady", "flipper"):
        log = logged(two_minds, model, "medqa_4opt")
        wrong = [row["doc_id"] for row in log if row["chosen"] != row["gold"]]
        assert [s.doc_id for s in viewer.select("medqa_4opt", f"{model} wrong")] == wrong
        right = [row["doc_id"] for row in log if row["chosen"] == row["gold"]]
        assert [s.doc_id for s in viewer.select("medqa_4opt", f"{model} right")] == right
    generated = [logged(two_minds, m, "medquad_gen") for m in ("steady", "flipper")]
    differ = [
        a["doc_id"] for a, b in zip(*generated, strict=True) if a["prediction"] != b["prediction"]
    ]
    assert [s.doc_id for s in viewer.select("medquad_gen", DISAGREE)] == differ
    last = generated[0][-1]["doc_id"]  # the gate's links open one question by its id
    assert [s.doc_id for s in viewer.select("medquad_gen", doc_id=last)] == [last]


def softmax_at(values: list[float], index: int) -> float:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    return weights[index] / sum(weights)


def test_sorting_puts_the_largest_difference_between_models_first(two_minds: Path) -> None:
    viewer = Viewer.open([two_minds])
    logs = [
        {row["doc_id"]: row for row in logged(two_minds, m, "medqa_4opt")}
        for m in ("steady", "flipper")
    ]

    def spread(doc: str) -> float:
        chosen = [softmax_at(log[doc]["loglikelihoods"], log[doc]["chosen"]) for log in logs]
        return max(chosen) - min(chosen)

    ordered = [s.doc_id for s in viewer.select("medqa_4opt", sort_by=PROBABILITY)]
    spreads = [spread(doc) for doc in ordered]
    assert sorted(ordered) == sorted(logs[0]) and spreads == sorted(spreads, reverse=True)
    assert spreads[0] > spreads[-1]
    by_acc = [s.doc_id for s in viewer.select("medqa_4opt", sort_by="acc")]
    assert set(by_acc[: len(differing_choices(two_minds, ["steady", "flipper"]))]) == set(
        differing_choices(two_minds, ["steady", "flipper"])
    )


def test_model_markup_is_escaped_in_the_html(two_minds: Path) -> None:
    html = render(Viewer.open([two_minds]).select("medquad_gen"))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def served(*args: str) -> Iterator[str]:
    """``medharness view ARGS`` on a free port, until the block ends."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "medharness", "view", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the viewer did not start"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)


def rows_after(page: Page, url: str) -> list[str]:
    page.open(url)
    page.wait_for(COUNT)
    rows: list[str] = page.evaluate(ROWS)
    return rows


@needs_chromium
def test_the_viewer_in_chromium_shows_the_disagreements_and_markup_as_text(
    two_minds: Path, tmp_path: Path
) -> None:
    with served(str(two_minds)) as url, chromium_page() as page:
        rows = rows_after(page, url + "?task=medqa_4opt&show=models+disagree")
        assert rows == differing_choices(two_minds, ["steady", "flipper"])
        count = page.evaluate(COUNT)
        n = len(logged(two_minds, "steady", "medqa_4opt"))  # of all, not of those shown
        assert len(rows) < n and count == f"{len(rows)} of {n} samples match the filters"
        page.screenshot(tmp_path / "viewer.png")
        assert (tmp_path / "viewer.png").stat().st_size > 10_000

        rows = rows_after(page, url + "?task=medquad_gen")
        assert len(rows) == len(logged(two_minds, "steady", "medquad_gen"))
        injected = page.evaluate(
            "document.querySelectorAll('#samples script, #samples img').length"
        )
        text = page.evaluate("document.querySelector('#samples').textContent")
        assert injected == 0 and MARKUP in text


@needs_chromium
def test_the_playground_answers_with_every_model_of_the_run(two_minds: Path) -> None:
    playground = Playground.of_run(two_minds)
    answers = list(playground.ask("What is (are) Condition 1 ?"))
    assert answers[-1] == [MARKUP, "Condition 1 is rare."]
    with served(str(two_minds), "--playground") as url, chromium_page() as page:
        page.open(url)
        page.wait_for(COUNT)
        open_playground(page)
        ask(page, "What is (are) Condition 1 ?")
        expected = json.dumps([MARKUP, "Condition 1 is rare."], separators=(",", ":"))
        page.wait_for(f"{ANSWERS} === {json.dumps(expected)}")


def open_playground(page: Page) -> None:
    page.evaluate(
        "[...document.querySelectorAll('button[role=tab]')]"
        ".find(b => b.textContent.includes('Playground')).click()"
    )


def ask(page: Page, question: str) -> None:
    """Type the question as a user would (the textarea's input event) and press the button."""
    page.wait_for("!!document.querySelector('#question textarea')")
    page.evaluate(
        "(() => { const box = document.querySelector('#question textarea');"
        f" box.value = {json.dumps(question)};"
        " box.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )
    page.evaluate("document.querySelector('#ask').click()")


def test_view_without_gradio_is_one_line(
    two_minds: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # what an absent package looks like
    assert main(["view", str(two_minds)]) == 2
    assert "pip install 'medharness-eval[view]'" in capsys.readouterr().err


@pytest.mark.slow
@needs_chromium
@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
@pytest.mark.heavy  # the whole quickstart; the fake-model viewer tests cover its paths
def test_quickstart_run_in_the_viewer_and_its_models_in_the_playground(tmp_path: Path) -> None:
    assert main(["run", str(ROOT / "configs" / "quickstart.yaml"), "--out", str(tmp_path)]) == 0
    run = tmp_path / "quickstart"
    models = ["smollm2", "smollm2-medprompt"]
    question = "What are the symptoms of anemia?"
    playground = Playground.of_run(run)
    steps = list(playground.ask(question))
    assert len(steps) > 2  # the answers grew: streamed, not delivered once
    expected = [
        playground.model(entry).generate([question], playground.max_new_tokens)[0]
        for entry in playground.entries
    ]
    assert steps[-1] == expected and expected[0] != expected[1]
    with served(str(run), "--playground") as url, chromium_page() as page:
        # the filter shows exactly the questions whose parsed options the logs show differ
        assert rows_after(page, url + "?task=medqa_4opt&show=models+disagree") == (
            differing_choices(run, models)
        )
        generated = [logged(run, m, "medquad_gen") for m in models]
        differ = [
            a["doc_id"]
            for a, b in zip(*generated, strict=True)
            if a["prediction"] != b["prediction"]
        ]
        assert rows_after(page, url + "?task=medquad_gen&show=models+disagree") == differ
        open_playground(page)
        ask(page, question)
        shown = json.dumps(expected, separators=(",", ":"))
        page.wait_for(f"{ANSWERS} === {json.dumps(shown)}", timeout=300)
