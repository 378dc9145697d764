"""Chain-of-thought multiple choice: reading the option from real-looking answers (and the
same answers through lm-eval's own filter code), reasoning traces, truncation, and runs of
the fake model that walk every path into the sample log, the results and their intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from statsmodels.stats.proportion import proportion_confint

from medharness.cli import main
from medharness.core.records import SAMPLE_ROWS, ChoiceRow
from medharness.models.base import Completion
from medharness.tasks.answers import extract_choice, split_reasoning
from medharness.tasks.multiple_choice import cot_question, medmcqa_prompt, medqa_prompt

LETTERS = ("A", "B", "C", "D")
FILLER = " ".join(["the", "patient", "has", "pain", "so", "we", "consider", "it"] * 6)

# (id, generated text, stopped at the token budget, scoring mode, expected: a letter,
# "invalid" or "truncated"). Answers as instruct and reasoning models write them.
CASES: list[tuple[str, str, bool, str, str]] = [
    (
        "final-plain",
        "Chest pain radiating to the back suggests dissection.\nFinal Answer: C",
        False,
        "cot",
        "C",
    ),
    ("final-bold-letter", "Reasoning as above.\nFinal Answer: **B**", False, "cot", "B"),
    ("final-bold-label", "Step 1: ... Step 2: ...\n**Final Answer:** D", False, "cot", "D"),
    (
        "final-bold-label-colon-outside",
        "Weighing the labs.\n**Final Answer**: A",
        False,
        "cot",
        "A",
    ),
    ("final-parenthesised", "So the best choice is clear.\nFinal Answer: (B)", False, "cot", "B"),
    ("final-lowercase-label", "hence\nfinal answer: C", False, "cot", "C"),
    ("final-with-option-text", "Final Answer: C. Metformin", False, "cot", "C"),
    ("final-with-paren-text", "Final Answer: C) Hyperkalemia", False, "cot", "C"),
    ("final-boxed", "Thus the answer follows.\nFinal Answer: $\\boxed{D}$", False, "cot", "D"),
    ("final-bracketed", "Final Answer: [B]", False, "cot", "B"),
    ("final-dash", "Final Answer - B", False, "cot", "B"),
    ("final-on-next-line", "Final Answer:\nC", False, "cot", "C"),
    ("final-heading", "Analysis done.\n\n### Final Answer\nB", False, "cot", "B"),
    ("final-answer-is", "Putting it together, the final answer is C.", False, "cot", "C"),
    (
        "final-revised",
        "Final Answer: A\nWait, the murmur points elsewhere.\nFinal Answer: B",
        False,
        "cot",
        "B",
    ),
    (
        "final-then-explanation",
        "Final Answer: B\n\nExplanation: Option A. is wrong because...",
        False,
        "cot",
        "B",
    ),
    (
        "final-format-echoed",
        "End your response with exactly this format:\nFinal Answer: X\nOK. Final Answer: B",
        False,
        "cot",
        "B",
    ),
    ("final-word-starting-with-letter", "Final Answer: Digoxin toxicity", False, "cot", "invalid"),
    ("final-not-an-option", "Final Answer: E", False, "cot", "invalid"),
    ("final-lowercase-letter", "final answer: c", False, "cot", "invalid"),
    ("final-sentence-no-letter", "Final Answer: The correct option is B", False, "cot", "invalid"),
    ("final-two-letters", "Final Answer: A or C", False, "cot", "A"),
    (
        "article-a-then-final",
        "This is a classic case of a rare disease.\nFinal Answer: A",
        False,
        "cot",
        "A",
    ),
    (
        "answer-is-parenthesised",
        "After weighing the findings, the answer is (C).",
        False,
        "cot",
        "C",
    ),
    ("answer-is-bold", "The answer is **B**.", False, "cot", "B"),
    ("answer-colon", "Answer: D", False, "cot", "D"),
    ("bold-letter-alone", "**C**", False, "cot", "C"),
    ("opens-with-option", "B. Aortic dissection is the most likely diagnosis.", False, "cot", "B"),
    ("one-option-named", "I would pick (D) given the rash.", False, "cot", "D"),
    (
        "option-text-without-letter",
        "The most likely diagnosis is aortic dissection.",
        False,
        "cot",
        "invalid",
    ),
    (
        "two-different-letters",
        "It could be A. or C. depending on the history.",
        False,
        "cot",
        "invalid",
    ),
    (
        "refusal",
        "I cannot provide medical advice; please consult a doctor.",
        False,
        "cot",
        "invalid",
    ),
    ("empty", "", False, "cot", "invalid"),
    ("whitespace", "  \n  ", False, "cot", "invalid"),
    (
        "think-one-letter-answer-another",
        "<think>The stem points to B. Final Answer: B</think>\nFinal Answer: D",
        False,
        "cot",
        "D",
    ),
    (
        "think-names-option-answer-final",
        "<think>Option A. is a distractor.</think>Final Answer: C",
        False,
        "cot",
        "C",
    ),
    ("think-then-answer-is", "<think>B seems right</think>The answer is B", False, "cot", "B"),
    ("think-empty", "<think>\n\n</think>\n\nFinal Answer: A", False, "cot", "A"),
    (
        "think-closed-by-template",
        "Okay, the patient is 34, maybe C.</think>\n\nFinal Answer: B",
        False,
        "cot",
        "B",
    ),
    (
        "think-closed-by-template-final-inside",
        "Hmm, Final Answer: C? No.</think>Final Answer: A",
        False,
        "cot",
        "A",
    ),
    ("thinking-tag", "<thinking>D fits the ECG.</thinking>Final Answer: D", False, "cot", "D"),
    (
        "think-unclosed",
        "<think>Let me consider option A. Final Answer: A is tempting but",
        False,
        "cot",
        "truncated",
    ),
    ("think-unclosed-at-budget", "<think>" + FILLER, True, "cot", "truncated"),
    ("thinking-unclosed", "<thinking>option D. looks", False, "cot", "truncated"),
    (
        "budget-before-final",
        "Step 1: the presentation suggests B. because " + FILLER,
        True,
        "cot",
        "truncated",
    ),
    (
        "budget-answer-is-but-no-final",
        "The answer is B because " + FILLER,
        True,
        "cot",
        "truncated",
    ),
    ("budget-after-final", FILLER + "\nFinal Answer: C", True, "cot", "C"),
    ("budget-empty", "", True, "cot", "truncated"),
    ("generate-letter", "B", False, "generate", "B"),
    (
        "generate-cut-after-letter",
        "B. Aortic dissection, because the pain " + FILLER,
        True,
        "generate",
        "B",
    ),
    ("generate-cut-naming-nothing", "Let me think about " + FILLER, True, "generate", "truncated"),
    ("generate-final-line", "Final Answer: C", False, "generate", "C"),
    ("generate-think-unclosed", "<think>A or B", False, "generate", "truncated"),
]


def outcome(text: str, hit_limit: bool, mode: str, choices: tuple[str, ...] = LETTERS) -> str:
    read = extract_choice(text, choices, hit_limit=hit_limit, final_line_required=mode == "cot")
    if read.truncated:
        return "truncated"
    return "invalid" if read.choice is None else choices[read.choice]


def test_the_table_has_every_kind_of_answer() -> None:
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)
    expected = {case[4] for case in CASES}
    assert {"invalid", "truncated", *LETTERS} <= expected


@pytest.mark.parametrize(
    ("text", "hit_limit", "mode", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_extraction(text: str, hit_limit: bool, mode: str, expected: str) -> None:
    assert outcome(text, hit_limit, mode) == expected


# lm-eval's generative medical tasks (medqa_4options_cot, medmcqa_cot and their _zeroshot
# variants, added after 0.4.13): this regex, then take_first; "[invalid]" when none matches.
LM_EVAL_COT_FILTER = [
    ["regex", {"regex_pattern": r"Final Answer:\s*(?:\*\*)?\s*([A-D])"}],
    ["take_first", None],
]
# Where medharness reads another choice than lm-eval's filter, and why.
LM_EVAL_DIFFERS: dict[str, tuple[str, str]] = {
    "final-bold-label-colon-outside": ("[invalid]", "lm-eval needs the colon right after Answer"),
    "final-parenthesised": ("[invalid]", "lm-eval takes no brackets"),
    "final-bracketed": ("[invalid]", "lm-eval takes no brackets"),
    "final-boxed": ("[invalid]", "lm-eval takes no \\boxed{}"),
    "final-lowercase-label": ("[invalid]", "lm-eval's label is case-sensitive"),
    "final-dash": ("[invalid]", "lm-eval needs a colon"),
    "final-heading": ("[invalid]", "lm-eval needs a colon"),
    "final-answer-is": ("[invalid]", "lm-eval needs 'Final Answer:'"),
    "final-revised": ("A", "lm-eval takes the first final line, medharness the last"),
    "final-word-starting-with-letter": ("D", "lm-eval reads the D of 'Digoxin'"),
    "answer-is-parenthesised": ("[invalid]", "lm-eval has no fallback rules"),
    "answer-is-bold": ("[invalid]", "lm-eval has no fallback rules"),
    "answer-colon": ("[invalid]", "lm-eval has no fallback rules"),
    "bold-letter-alone": ("[invalid]", "lm-eval has no fallback rules"),
    "opens-with-option": ("[invalid]", "lm-eval has no fallback rules"),
    "one-option-named": ("[invalid]", "lm-eval has no fallback rules"),
    "think-then-answer-is": ("[invalid]", "lm-eval has no fallback rules"),
    "think-one-letter-answer-another": ("B", "lm-eval reads the trace's final line first"),
    "think-closed-by-template-final-inside": ("C", "lm-eval reads the trace's final line"),
    "think-unclosed": ("A", "lm-eval parses a cut-off trace; medharness calls it truncated"),
}


def lm_eval_choices(outputs: list[str]) -> list[str]:
    """The outputs through lm-eval's own filter code, as its task config builds it."""
    from lm_eval.filters import build_filter_ensemble

    ensemble = build_filter_ensemble("regex-extractor", LM_EVAL_COT_FILTER)  # type: ignore[arg-type]
    responses: Any = [[output] for output in outputs]
    for make in ensemble.filters:
        responses = make().apply(responses, [{} for _ in outputs])
    return list(responses)


def test_same_choices_as_lm_evals_filter_but_the_listed_differences() -> None:
    cot = [case for case in CASES if case[3] == "cot"]
    theirs = lm_eval_choices([case[1] for case in cot])
    ours = [outcome(text, hit, mode) for _, text, hit, mode, _ in cot]
    ours = [o if o in LETTERS else "[invalid]" for o in ours]
    differing = {
        case[0]: lm_eval
        for case, mine, lm_eval in zip(cot, ours, theirs, strict=True)
        if mine != lm_eval
    }
    assert differing == {name: lm_eval for name, (lm_eval, _) in LM_EVAL_DIFFERS.items()}
    assert len(cot) - len(differing) >= 20  # most answers read alike


def test_prompt_is_lm_evals_cot_prompt_word_for_word() -> None:
    """lm-eval's preprocess_medqa.doc_to_text_cot and utils_medmcqa.doc_to_text_cot."""
    options = ["alpha", "beta", "gamma", "delta"]
    lm_eval_medqa = (
        "Question: Q?\nA. alpha\nB. beta\nC. gamma\nD. delta\nFirst, think step-by-step. End "
        "your response with exactly this format:\nFinal Answer: X\n(where X is A, B, C, or D)."
    )
    assert cot_question(medqa_prompt("Q?", options), LETTERS) == lm_eval_medqa
    medmcqa = cot_question(medmcqa_prompt("Q?", options), LETTERS)
    assert medmcqa == lm_eval_medqa.replace("Q?\n", "Q?\nChoices:\n")


def test_word_options_and_custom_tags() -> None:
    assert outcome("Final Answer: maybe", False, "cot", ("yes", "no", "maybe")) == "maybe"
    assert outcome("Final Answer: Yes.", False, "cot", ("yes", "no", "maybe")) == "yes"
    split = split_reasoning("[R]B or C[/R] Final Answer: C", [("[R]", "[/R]")])
    assert (split.reasoning, split.reply, split.unclosed) == ("B or C", "Final Answer: C", False)
    read = extract_choice("[R]only A", LETTERS, tags=[("[R]", "[/R]")])
    assert read.truncated and read.reasoning == "only A"
    served = extract_choice("Final Answer: B", LETTERS, reasoning="A? no, B.")
    assert (served.choice, served.reasoning) == (1, "A? no, B.")


# The fixture's MedQA questions name "symptom {i}"; gold is "ABCD"[i % 4].
SCRIPT = {
    "cut_at_budget": True,
    "generate": [
        {
            "match": "symptom 0.",
            "output": "<think>The stem suggests B. On reflection it is A.</think>\nFinal Answer: A",
        },
        {"match": "symptom 1.", "output": "<think>" + FILLER},
        {"match": "symptom 2.", "output": "Let me reason. Option C. may fit " + FILLER},
        {"match": "symptom 3.", "output": "I am not sure which option fits."},
        {"match": "symptom 4.", "output": "The answer is (C)."},
    ],
    "default_output": "Final Answer: B",
}


def cot_run(tmp_path: Path, data: Path, budget: int = 30, **entry: Any) -> Path:
    script = tmp_path / "cot.yaml"
    script.write_text(yaml.safe_dump(SCRIPT), encoding="utf-8")
    config = {
        "name": "cot",
        "data_dir": str(data),
        "models": [
            {"name": "m", "model": f"fake:{script}", "multiple_choice": "cot", **entry},
        ],
        "tasks": ["medqa_4opt"],
        "generation": {"cot_max_new_tokens": budget},
        "bootstrap_resamples": 100,
    }
    path = tmp_path / "cot-run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 0
    return tmp_path / "runs" / "cot"


def logged(run: Path) -> dict[str, ChoiceRow]:
    text = (run / "samples" / "m" / "medqa_4opt.jsonl").read_text()
    rows = SAMPLE_ROWS.validate_python([json.loads(line) for line in text.splitlines()])
    return {row.doc_id: row for row in rows if isinstance(row, ChoiceRow)}


def test_fake_cot_run_logs_traces_truncation_and_rates_with_intervals(
    tmp_path: Path, fixture_data: Path
) -> None:
    run = cot_run(tmp_path, fixture_data, reasoning={})
    rows = logged(run)
    assert len(rows) == 8
    outcomes = sorted((row.extracted_by, row.prediction) for row in rows.values())
    assert outcomes == sorted(
        [("final_answer", "A"), ("truncated", ""), ("truncated", ""), ("none", ""),
         ("answer_is", "C"), ("final_answer", "B"), ("final_answer", "B"), ("final_answer", "B")]
    )  # fmt: skip
    first = next(r for r in rows.values() if r.reasoning and r.reasoning.startswith("The stem"))
    assert first.reasoning == "The stem suggests B. On reflection it is A."
    assert first.reasoning_tokens == 9 and first.hit_token_limit is False and first.chosen == 0
    unclosed = next(r for r in rows.values() if r.reasoning and r.reasoning.startswith("the pat"))
    assert unclosed.extracted_by == "truncated" and unclosed.hit_token_limit is True
    assert unclosed.answer_tokens == 30 and unclosed.reasoning_tokens == 30
    for row in rows.values():
        assert row.metrics["truncated"] == float(row.extracted_by == "truncated")
        assert row.metrics["invalid_answer"] == float(row.extracted_by == "none")
        assert row.metrics["acc"] == float(row.chosen == row.gold)
    result = json.loads((run / "results.json").read_text())["results"]["m"]["medqa_4opt"]
    for name, count in (("truncated", 2), ("invalid_answer", 1)):
        low, high = proportion_confint(count, 8, method="beta")
        assert result["metrics"][name]["value"] == count / 8
        assert result["metrics"][name]["ci95"] == pytest.approx([low, high], abs=1e-9)
    correct = sum(row.chosen == row.gold for row in rows.values())
    assert result["metrics"]["acc"]["value"] == correct / 8


def test_cot_prompt_and_budget_are_sent_and_key_the_log(tmp_path: Path, fixture_data: Path) -> None:
    trace = tmp_path / "calls.log"
    SCRIPT["trace_file"] = str(trace)
    try:
        run = cot_run(tmp_path, fixture_data)
        asked = [json.loads(line.split("\t", 1)[1]) for line in trace.read_text().splitlines()]
        assert len(asked) == 8 and all(m.endswith("(where X is A, B, C, or D).") for m in asked)
        manifest = json.loads((run / "manifest.json").read_text())
        key = manifest["pair_keys"]["m/medqa_4opt"]
        again = cot_run(tmp_path, fixture_data)  # unchanged: the log is reused, no model call
        assert json.loads((again / "manifest.json").read_text())["pair_keys"]["m/medqa_4opt"] == key
        assert len(trace.read_text().splitlines()) == 8
        longer = cot_run(tmp_path, fixture_data, budget=200)  # a new budget scores again
        assert (
            json.loads((longer / "manifest.json").read_text())["pair_keys"]["m/medqa_4opt"] != key
        )
        rows = logged(longer)
        assert sum(row.extracted_by == "truncated" for row in rows.values()) == 1  # the open trace
    finally:
        SCRIPT.pop("trace_file")


def test_report_and_viewer_show_rates_reasoning_extracted_option_and_rule(
    tmp_path: Path, fixture_data: Path
) -> None:
    import base64
    import gzip
    import re

    from medharness.reports.viewer import Viewer, render

    run = cot_run(tmp_path, fixture_data)
    out = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    html = out.read_text()
    assert "Truncated answers" in html and "Invalid answers" in html and "Accuracy" in html
    encoded = re.search(r'id="samples-data"[^>]*>([^<]+)<', html)
    assert encoded is not None
    payload = json.loads(gzip.decompress(base64.b64decode(encoded.group(1).strip())))
    column = payload["tasks"]["medqa_4opt"]["answers"][0]
    rows = logged(run)
    ids = payload["tasks"]["medqa_4opt"]["ids"]
    assert column["rule"] == [rows[i].extracted_by for i in ids]
    assert column["reasoning"] == [rows[i].reasoning for i in ids]
    assert column["reply"] == [rows[i].answer for i in ids]

    shown = render(Viewer.open([run]).samples("medqa_4opt"))
    assert "<b>Extracted:</b> A · <b>rule:</b> final_answer" in shown
    assert "<b>Extracted:</b> no option · <b>rule:</b> truncated" in shown
    assert (
        "reasoning (9 tokens)" in shown and "The stem suggests B. On reflection it is A." in shown
    )
    assert "&lt;think&gt;" in shown  # the answer as written, escaped


def test_an_answer_ends_at_its_first_stop_token_or_is_cut_off_at_the_budget() -> None:
    from medharness.models.hf import ended

    eos, pad = 2, 2
    assert ended(" B ", [7, 8, eos, pad], {eos}, 4) == Completion("B", False, 3)
    assert ended("long", [7, 8, 9, 10], {eos}, 4) == Completion("long", True, 4)
    assert ended("short", [7, 8], {eos}, 4) == Completion("short", False, 2)


def test_transformers_completions_say_how_each_answer_ended(tiny_llama: Path) -> None:
    from medharness.models.loading import load_model

    model = load_model(str(tiny_llama), backend="hf", dtype="float32")
    messages = ["What is asthma?", "Hi"]
    budgeted = model.complete(messages, 6)
    assert [c.text for c in budgeted] == model.generate(messages, 6)
    for completion in budgeted:  # a random model seldom stops: most run out of budget
        assert completion.tokens is not None and completion.tokens <= 6
        assert completion.hit_limit == (completion.tokens == 6)
        encoded = model.tokenizer(completion.text, add_special_tokens=False)["input_ids"]
        assert model.count_tokens(completion.text) == len(encoded)
