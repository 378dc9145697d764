"""Card claims as data: every shipped card loads and plans; verdicts follow the measured
numbers; `medharness reproduce` runs a card end to end on the tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medharness.cli import main
from medharness.reports.cards import MODEL_NUMBERS, Card, judge, load_card, plan_run

ROOT = Path(__file__).resolve().parent.parent
CARDS = sorted((ROOT / "cards").glob("*.yaml"))


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.name)
def test_every_shipped_card_loads_and_plans_a_valid_run(path: Path) -> None:
    card = load_card(path)
    plan = plan_run(card, "smollm2-135m-instruct", "small", cuda=False)
    assert plan.config.models[0].name == "base"
    assert any("in place of" in item for item in plan.substitutions)
    if card.train is not None:
        spec = plan.config.models[1].train
        assert spec is not None and spec.recipe != "qlora" and spec.precision in ("auto", "fp32")


def test_all_five_cards_and_the_med_llama_numbers_are_encoded() -> None:
    assert len(CARDS) == 5
    card = load_card(ROOT / "cards" / "med-llama-3.2.yaml")
    claimed = {claim.id: claim.value for claim in card.claims}
    assert claimed["base-rouge1"] == 0.2547 and claimed["tuned-rouge1"] == 0.3359
    assert claimed["delta-rouge1"] == pytest.approx(0.3359 - 0.2547)
    assert {claim.kind for claim in card.claims} >= {"value", "delta", "sweep_point", "sweep_best"}


def test_a_claim_on_an_unknown_metric_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "cards" / "med-llama-3.2.yaml").read_text())
    data["claims"][0]["metric"] = "rouge9"
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="unknown metric 'rouge9'"):
        load_card(path)


@pytest.fixture(scope="module")
def scripted_run(fixture_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with models named base and tuned (scripted: fast and known)."""
    work = tmp_path_factory.mktemp("cards")
    for name, words in (("base", 4), ("tuned", 30)):
        (work / f"{name}.yaml").write_text(yaml.safe_dump({"babble_words": words}))
    config = {
        "name": "scripted",
        "data_dir": str(fixture_data),
        "models": [{"name": n, "model": f"fake:{work / n}.yaml"} for n in ("base", "tuned")],
        "tasks": ["medquad_gen"],
        "bootstrap_resamples": 200,
    }
    (work / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(work / "run.yaml"), "--out", str(work / "runs")]) == 0
    return work / "runs" / "scripted"


def card_with(claims: list[dict[str, object]]) -> Card:
    return Card.model_validate(
        {
            "id": "t",
            "title": "t",
            "source": "t",
            "model": "org/model",
            "training_data": "t",
            "tasks": [{"name": "medquad_gen"}],
            "claims": claims,
        }
    )


def test_value_and_delta_verdicts_follow_the_measured_numbers(scripted_run: Path) -> None:
    results = json.loads((scripted_run / "results.json").read_text())["results"]
    base = results["base"]["medquad_gen"]["metrics"]["rouge1"]["value"]
    tuned = results["tuned"]["medquad_gen"]["metrics"]["rouge1"]["value"]
    card = card_with(
        [
            {
                "id": "near",
                "kind": "value",
                "model": "base",
                "task": "medquad_gen",
                "metric": "rouge1",
                "value": base + 0.019,
                "text": "near",
            },
            {
                "id": "far",
                "kind": "value",
                "model": "base",
                "task": "medquad_gen",
                "metric": "rouge1",
                "value": base + 0.05,
                "text": "far",
            },
            {
                "id": "delta",
                "kind": "delta",
                "task": "medquad_gen",
                "metric": "rouge1",
                "value": tuned - base,
                "tolerance": 1e-9,
                "text": "delta",
            },
            {
                "id": "n/a",
                "kind": "not_checkable",
                "task": "medquad_gen",
                "metric": "bleu",
                "value": 34.5,
                "reason": "undisclosed test set",
                "text": "BLEU 34.5",
            },
            {
                "id": "sweep",
                "kind": "sweep_best",
                "params": {"learning_rate": 1e-4},
                "text": "best",
            },
        ]
    )
    verdicts = {v.claim: v for v in judge(card, scripted_run, []).verdicts}
    assert verdicts["near"].status == "reproduced"
    assert verdicts["far"].status == "not reproduced"
    assert verdicts["far"].measured == f"{base:.4f}"
    assert verdicts["delta"].status == "reproduced" and "p =" in verdicts["delta"].detail
    assert verdicts["n/a"].status == "not checkable" and "proxy" in verdicts["n/a"].measured
    assert verdicts["sweep"].status == "not checkable"  # the run has no sweep

    substituted = {v.claim: v for v in judge(card, scripted_run, [], "other-model").verdicts}
    assert substituted["near"].status == "not checkable"
    assert substituted["near"].measured == verdicts["near"].measured  # still shown
    assert substituted["near"].detail.startswith("substituted model")


def test_reproduce_med_llama_card_end_to_end_on_the_tiny_model(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "reproduce",
            str(ROOT / "cards" / "med-llama-3.2.yaml"),
            "--model",
            str(tiny_llama),
            "--budget",
            "small",
            "--data-dir",
            str(fixture_data),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    run_dir = tmp_path / "reproduce-med-llama-3.2"
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert len(verdict["verdicts"]) == 15
    kinds = {
        claim.id: claim.kind for claim in load_card(ROOT / "cards" / "med-llama-3.2.yaml").claims
    }
    for item in verdict["verdicts"]:  # a substituted model checks the pipeline, not numbers
        on_numbers = kinds[item["claim"]] in MODEL_NUMBERS
        assert (item["status"] == "not checkable") == on_numbers, item
        assert (item["detail"].startswith("substituted model")) == on_numbers, item
    assert verdict["substituted_model"] == str(tiny_llama)
    assert any("in place of unsloth/Llama-3.2-1B-Instruct" in s for s in verdict["substitutions"])
    markdown = (run_dir / "verdict.md").read_text()
    assert "| fine-tuned ROUGE-1 0.3359 |" in markdown
    html = (run_dir / "verdict.html").read_text()
    assert "Departures from the card" in html and "sweep lr 1e-4, r 16" in html
    body = html.split("<body>", 1)[1]
    assert body.index("The model was substituted") < body.index("<table>")  # said at the top
    assert markdown.index("The model was substituted") < markdown.index("| claim |")
    glyphs = [char for char in html + markdown if ord(char) >= 0x2190]  # arrows, symbols, emoji
    assert not glyphs, glyphs  # text only: fonts without emoji showed empty boxes
    assert len(json.loads((run_dir / "train" / "tuned" / "sweep.json").read_text())["points"]) == 3
