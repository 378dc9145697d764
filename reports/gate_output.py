"""A gate decision as text for a terminal, JSON, JUnit XML for CI systems, Markdown for a PR
comment. Each carries every rule's verdict, its evidence, and the overall decision."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

from medharness.core.records import GateFlips, GateRule
from medharness.reports.gate import GateResult

VIEW_URL = "http://127.0.0.1:7860/"  # where `medharness view` serves by default
FLIPS_LISTED = 5
MARK = {"PASS": "✅", "FAIL": "❌", "INCONCLUSIVE": "❔", "MISSING": "⛔"}
EFFECT_WORDS = {"blocks": "blocks", "warns": "warning", "none": ""}


def headline(result: GateResult) -> str:
    against = f" against {result.baseline}" if result.baseline else ""
    blocking = sum(rule.effect == "blocks" for rule in result.rules)
    warnings = len(result.warnings)
    if result.passed:
        state = "PASSED" + (f" with {warnings} warning{'s' * (warnings != 1)}" if warnings else "")
    else:
        state = f"BLOCKED ({blocking} of {len(result.rules)} rules block)"
    return f"medharness gate {state}: {result.candidate}{against}"


def verdict_label(rule: GateRule) -> str:
    effect = EFFECT_WORDS[rule.effect]
    return f"{rule.verdict} ({rule.tier}{', ' + effect if effect else ''})"


def render_text(result: GateResult) -> str:
    lines = [headline(result)]
    lines += [
        f"  {rule.verdict:<12} {rule.name} [{rule.tier}"
        + (f", {EFFECT_WORDS[rule.effect]}" if rule.effect != "none" else "")
        + f"]: {rule.evidence}"
        for rule in result.rules
    ]
    return "\n".join(lines)


def render_json(result: GateResult) -> str:
    return result.record().model_dump_json(indent=2) + "\n"


def render_junit(result: GateResult) -> str:
    """One test case per rule: a blocking rule is a ``<failure>``; a warning is a passing
    case whose output says so (CI systems show no third state)."""
    failures = sum(rule.effect == "blocks" for rule in result.rules)
    suites = ET.Element(
        "testsuites",
        name=headline(result),
        tests=str(len(result.rules)),
        failures=str(failures),
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"medharness gate: {result.candidate}",
        tests=str(len(result.rules)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="decision", value=result.record().decision)
    for rule in result.rules:
        case = ET.SubElement(suite, "testcase", classname=f"gate.{rule.task}", name=rule.name)
        text = f"{verdict_label(rule)}: {rule.evidence}"
        if rule.effect == "blocks":
            failure = ET.SubElement(case, "failure", message=text, type=f"Gate{rule.verdict}")
            failure.text = f"{rule.name}: {text}"
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def view_link(task: str, doc_id: str) -> str:
    """The question in ``medharness view`` (opened on the candidate's run directory)."""
    return f"{VIEW_URL}?{urlencode({'task': task, 'doc': doc_id})}"


def flip_lines(flips: GateFlips) -> list[str]:
    def listed(doc_ids: list[str]) -> str:
        shown = ", ".join(
            f"[{doc}]({view_link(flips.task, doc)})" for doc in doc_ids[:FLIPS_LISTED]
        )
        more = f" and {len(doc_ids) - FLIPS_LISTED} more" if len(doc_ids) > FLIPS_LISTED else ""
        return shown + more if doc_ids else "none"

    return [
        f"- **{flips.task}**: {len(flips.right_to_wrong)} right → wrong, "
        f"{len(flips.wrong_to_right)} wrong → right",
        f"  - right → wrong: {listed(flips.right_to_wrong)}",
        f"  - wrong → right: {listed(flips.wrong_to_right)}",
    ]


def render_markdown(result: GateResult) -> str:
    rows = [
        f"| {MARK[rule.verdict]} {verdict_label(rule)} | {cell(rule.name)} | "
        f"{cell(rule.evidence)} |"
        for rule in result.rules
    ]
    lines = [
        f"### {headline(result)}",
        "",
        "| verdict | rule | evidence |",
        "|---|---|---|",
        *rows,
        "",
        "PASS: the whole 95% interval is on the right side of the margin or floor. FAIL: the "
        "whole interval is on the wrong side. INCONCLUSIVE: the interval contains it, so the "
        "run is too small to tell. MISSING: a required result is absent. "
        + (
            "An INCONCLUSIVE critical rule blocks."
            if result.inconclusive_blocks
            else "An INCONCLUSIVE rule only warns (the policy's inconclusive_blocks: false)."
        ),
        "",
    ]
    if result.flips:
        lines += [
            "#### Questions that changed",
            "",
            *(line for flips in result.flips for line in flip_lines(flips)),
            "",
            "Links open the question in `medharness view` on the candidate's run directory.",
            "",
        ]
    return "\n".join(lines)
