"""Reports from saved runs: content, Markdown block, leaderboard, and real Chromium checks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from medharness.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=8000",
]
PAYLOADS = (
    "<script>document.body.dataset.pwned = 'script'</script>"
    "<img src=x onerror=\"document.body.dataset.pwned = 'img'\">"
)


def fake_model(directory: Path, name: str, **script: object) -> str:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(script), encoding="utf-8")
    return f"fake:{path}"


@pytest.fixture(scope="module")
def three_model_run(tmp_path_factory: pytest.TempPathFactory, fixture_data: Path) -> Path:
    work = tmp_path_factory.mktemp("reports")
    models = [
        {"name": "base", "model": fake_model(work, "base", babble_words=20, seed=1)},
        {
            "name": "tuned",
            "model": fake_model(
                work,
                "tuned",
                seed=2,
                default_output=PAYLOADS,
                choose=[{"match": f"symptom {i}", "answer": "ABCD"[i % 4]} for i in range(8)],
            ),
        },
        {"name": "other", "model": fake_model(work, "other", babble_words=5, seed=3)},
    ]
    config = work / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "three",
                "models": models,
                "data_dir": str(fixture_data),
                "tasks": ["medquad_gen", "medqa_4opt", "pubmedqa"],
                "bootstrap_resamples": 200,
                "multiple_comparisons": "none",  # verdicts on raw p; correction tested below
            }
        ),
        encoding="utf-8",
    )
    assert main(["run", str(config), "--out", str(work / "runs")]) == 0
    return work / "runs" / "three"


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=120, check=False
    )


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_shows_three_models_deltas_and_tests(three_model_run: Path) -> None:
    html = (three_model_run / "report.html").read_text()
    for text in (
        "base",
        "tuned",
        "other",
        "Paired comparisons with base",
        "McNemar exact",
        "paired bootstrap",
        "rouge1 by qtype",
        "Answer length",
        "Sample browser",
    ):
        assert text in html, text
    assert "<script>document.body" not in html and 'onerror="document' not in html
    assert "http://" not in html and "https://" not in html.replace("https://example.org", "")


def test_markdown_block_carries_metric_settings(three_model_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "card.md"
    assert main(["report", str(three_model_run), "-o", str(out)]) == 0
    text = out.read_text()
    assert "| base (baseline) |" in text and "| tuned |" in text
    assert "use_stemmer=False" in text and "nrefs:1|case:mixed|eff:no|tok:13a" in text
    assert "pts" in text and "%" in text  # deltas both in points and relative percent


def test_leaderboard_warns_when_runs_are_not_comparable(
    three_model_run: Path, tmp_path: Path, fixture_data: Path
) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "small",
                "data_dir": str(fixture_data),
                "limit": 3,
                "models": [{"name": "solo", "model": fake_model(tmp_path, "solo", seed=9)}],
                "tasks": ["medqa_4opt"],
            }
        ),
        encoding="utf-8",
    )
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    out = tmp_path / "board.html"
    assert (
        main(["leaderboard", str(three_model_run), str(tmp_path / "runs/small"), "-o", str(out)])
        == 0
    )
    html = out.read_text()
    assert "medqa_4opt: runs differ in sample counts" in html
    assert "solo" in html and html.count("<tr>") >= 5


def test_training_curves_and_sweep_table_render_when_present(
    three_model_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "trained"
    shutil.copytree(three_model_run, run)
    log = run / "train" / "tuned" / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(
        "".join(
            json.dumps({"step": s, "loss": 2.0 / s, "learning_rate": 1e-4, "grad_norm": 1.0}) + "\n"
            for s in range(1, 6)
        )
    )
    (log.parent / "sweep.json").write_text(
        json.dumps(
            {
                "metric": "rouge1",
                "best": 1,
                "points": [
                    {"params": {"lr": 1e-4, "rank": 16}, "value": 0.31},
                    {"params": {"lr": 2e-4, "rank": 8}, "value": 0.33},
                ],
            }
        )
    )
    out = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    html = out.read_text()
    assert "Training curves" in html and "training loss" in html
    assert "Hyper-parameter sweep" in html and "<strong>best</strong>" in html


def test_report_refuses_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


@needs_chromium
def test_report_runs_in_chromium_without_errors_or_injected_script(
    three_model_run: Path, tmp_path: Path
) -> None:
    result = chromium(
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        (three_model_run / "report.html").as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    dom = result.stdout
    assert 'data-browser-ready="1"' in dom, "the sample browser did not finish loading"
    assert "data-pwned" not in dom, "model text ran as script"
    assert "document.body.dataset.pwned = 'script'" in dom  # shown as text instead
    assert dom.count('class="doc"') == 9  # the fixture's MedQuAD test split, first task


@needs_chromium
def test_report_screenshot_shows_the_summary_table(three_model_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    result = chromium(
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1400",  # below the verdict summary, which now comes first
        f"--screenshot={shot}",
        (three_model_run / "report.html").as_uri(),
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    pixels = list(image.getdata())
    header_grey = sum(1 for p in pixels if p == (0xF4, 0xF6, 0xF9))
    ink = sum(1 for p in pixels if sum(p) < 200)
    assert header_grey > 2000, "the summary table's header row is not visible"
    assert ink > 1500, "hardly any text on screen"
    bars = sum(1 for p in pixels if p == (0x3B, 0x6F, 0xB6))
    assert bars > 100, "no bar of the chart is visible"


@needs_chromium
def test_leaderboard_sorts_in_chromium(three_model_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "board.html"
    assert main(["leaderboard", str(three_model_run), "-o", str(out)]) == 0
    result = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", out.as_uri())
    assert console_messages(result.stderr) == []
    assert 'data-ready="1"' in result.stdout


def layout_probe(page: Path, tmp_path: Path, width: int, script: str) -> str:
    """The page's DOM after ``script`` (which writes its findings to body data attributes)
    ran at the given window width in Chromium."""
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>"))
    result = chromium(
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={width},900",
        "--dump-dom",
        probed.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


OVERFLOW = """
addEventListener("load", () => {
  const clipped = [...document.querySelectorAll("table")].filter((table) => {
    const box = table.parentElement;
    const scrolls = getComputedStyle(box).overflowX === "auto";
    return table.scrollWidth > box.clientWidth + 1 && !scrolls;
  });
  document.body.dataset.clipped = clipped.length;
  document.body.dataset.pageOverflow = document.documentElement.scrollWidth > innerWidth + 1;
  const board = document.querySelector("#board");
  if (board) document.body.dataset.boardScrolls = board.parentElement.scrollWidth >
    board.parentElement.clientWidth + 1;
});
"""


@needs_chromium
def test_report_tables_scroll_instead_of_being_clipped(
    three_model_run: Path, tmp_path: Path
) -> None:
    for width in (700, 1400):
        dom = layout_probe(three_model_run / "report.html", tmp_path, width, OVERFLOW)
        assert 'data-clipped="0"' in dom and 'data-page-overflow="false"' in dom, width


@needs_chromium
def test_leaderboard_shows_every_column_on_a_wide_screen(
    three_model_run: Path, tmp_path: Path
) -> None:
    board = tmp_path / "board.html"
    assert main(["leaderboard", str(three_model_run), "-o", str(board)]) == 0
    dom = layout_probe(board, tmp_path, 2200, OVERFLOW)
    assert 'data-board-scrolls="false"' in dom  # run, date and version columns all in view
    narrow = layout_probe(board, tmp_path, 700, OVERFLOW)
    assert 'data-board-scrolls="true"' in narrow and 'data-clipped="0"' in narrow


@needs_chromium
def test_report_opens_on_the_verdict_summary(three_model_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    html = (three_model_run / "report.html").read_text()
    assert html.index('id="verdict"') < html.index('id="task-medquad_gen"')
    shot = tmp_path / "top.png"
    result = chromium(
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,900",
        f"--screenshot={shot}",
        (three_model_run / "report.html").as_uri(),
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    top = Image.open(shot).convert("RGB").crop((0, 0, 1200, 450))
    pixels = list(top.getdata())
    better = sum(1 for p in pixels if p == (0xDC, 0xF1, 0xE3))
    worse = sum(1 for p in pixels if p == (0xFB, 0xE3, 0xE1))
    # tuned answers every MedQA fixture question right (better) and babbles no ROUGE (worse)
    assert better > 500 and worse > 500, (better, worse)


def test_verdict_summary_matches_the_paired_comparisons(three_model_run: Path) -> None:
    from medharness.reports.html import build_report

    report = build_report([three_model_run])
    for row in report["verdicts"]:
        section = next(s for s in report["sections"] if s["name"] == row["task"])
        chips = [chip for cell in row["cells"] if cell for chip in cell["chips"]]
        assert chips == [c for c in section["comparisons"] if "error" not in c]
    medqa = next(row for row in report["verdicts"] if row["task"] == "medqa_4opt")
    tuned = medqa["cells"][report["candidates"].index("tuned")]
    assert [(c["metric"], c["verdict"]) for c in tuned["chips"]] == [("acc", "better")]


def test_rates_get_their_own_axis_and_a_zero_bar_still_shows(three_model_run: Path) -> None:
    from medharness.reports.charts import MIN_BAR, bar_chart
    from medharness.reports.html import build_report

    section = build_report([three_model_run])["sections"][0]
    scores, rates = section["charts"]
    assert "disclaimer_rate" in rates and "disclaimer_rate" not in scores
    assert "rouge1" in scores and "rouge1" not in rates
    zero = bar_chart(["m"], ["a"], [[(0.0, 0.0, 0.0)]])
    assert f'height="{MIN_BAR:.1f}"' in zero


@pytest.mark.parametrize(("method", "name"), [("holm", "Holm"), ("bh", "Benjamini-Hochberg")])
def test_the_report_corrects_every_p_value_together_as_statsmodels_does(
    three_model_run: Path, tmp_path: Path, method: str, name: str
) -> None:
    from statsmodels.stats.multitest import multipletests

    from medharness.reports.html import build_report, render_report

    run = tmp_path / "run"
    shutil.copytree(three_model_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["multiple_comparisons"] = method
    (run / "manifest.json").write_text(json.dumps(manifest))
    raw = [c for s in build_report([three_model_run])["sections"] for c in s["comparisons"]]
    report = build_report([run])
    rows = [c for s in report["sections"] for c in s["comparisons"]]
    expected = multipletests([c["p"] for c in raw], method="holm" if method == "holm" else "fdr_bh")
    assert [c["p_adjusted"] for c in rows] == pytest.approx(list(expected[1]))
    assert report["family"] == len(rows) and report["correction"] == name
    for before, after, reject in zip(raw, rows, expected[0], strict=True):
        assert (after["verdict"] != "no significant difference") == bool(reject)
        assert after["p"] == before["p"]
    assert any(b["verdict"] != a["verdict"] for b, a in zip(raw, rows, strict=True)), (
        "the fixture should have a raw p below 0.05 that the correction lifts above it"
    )
    html = render_report([run])
    assert f"p ({name})" in html and f"adjusted by {name} over" in html


def test_leaderboard_marks_corrected_comparisons_and_a_win_rate(
    three_model_run: Path, tmp_path: Path
) -> None:
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.proportion import proportion_confint

    from medharness.reports.leaderboard import build_leaderboard, render_leaderboard

    run = tmp_path / "run"
    shutil.copytree(three_model_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["multiple_comparisons"] = "holm"
    (run / "manifest.json").write_text(json.dumps(manifest))
    board = build_leaderboard([run])
    made = [
        cell["comparison"]
        for row in board["rows"]
        for cell in row["cells"]
        if cell and cell["comparison"]
    ]
    assert board["family"] == len(made) > 0
    expected = multipletests([c.p_value for c in made], method="holm")[1]
    assert [c.p_adjusted for c in made] == pytest.approx(list(expected))
    tuned = next(row for row in board["rows"] if row["label"] == "tuned")
    # tuned beats base on medqa_4opt accuracy, not on medquad_gen ROUGE-1 or pubmedqa (a tie)
    assert (tuned["wins"]["won"], tuned["wins"]["of"]) == (1, 3)
    low, high = proportion_confint(1, 3, alpha=0.05, method="beta")
    assert (tuned["wins"]["low"], tuned["wins"]["high"]) == pytest.approx((low, high))
    assert next(row for row in board["rows"] if row["label"] == "base")["wins"] is None
    html = render_leaderboard([run])
    assert "adjusted by Holm over the" in html and "wins vs base" in html
