"""A gate verdict as text for a terminal, JUnit XML for CI systems, Markdown for a PR comment."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from medharness.reports.gate import GateResult


def headline(result: GateResult) -> str:
    failed = sum(not rule.passed for rule in result.rules)
    against = f" against {result.baseline}" if result.baseline else ""
    state = "PASSED" if result.passed else f"FAILED ({failed} of {len(result.rules)} rules)"
    return f"medharness gate {state}: {result.candidate}{against}"


def render_text(result: GateResult) -> str:
    lines = [headline(result)]
    lines += [
        f"  {'PASS' if rule.passed else 'FAIL'}  {rule.name}: {rule.detail}"
        for rule in result.rules
    ]
    return "\n".join(lines)


def render_junit(result: GateResult) -> str:
    """One test case per rule; a failing rule is a ``<failure>`` with its measurement."""
    failures = sum(not rule.passed for rule in result.rules)
    suites = ET.Element("testsuites", tests=str(len(result.rules)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"medharness gate: {result.candidate}",
        tests=str(len(result.rules)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    for rule in result.rules:
        case = ET.SubElement(suite, "testcase", classname=f"gate.{rule.task}", name=rule.name)
        if rule.passed:
            ET.SubElement(case, "system-out").text = rule.detail
        else:
            failure = ET.SubElement(case, "failure", message=rule.detail, type="GateRuleFailed")
            failure.text = f"{rule.name}: {rule.detail}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def render_markdown(result: GateResult) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = [
        f"| {'✅ pass' if rule.passed else '❌ fail'} | {cell(rule.name)} | {cell(rule.detail)} |"
        for rule in result.rules
    ]
    return "\n".join(
        [f"### {headline(result)}", "", "| result | rule | detail |", "|---|---|---|", *rows, ""]
    )
