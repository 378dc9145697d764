"""A card's verdict table as Markdown and as a single-file HTML page."""

from __future__ import annotations

from medharness.reports.cards import VerdictTable
from medharness.reports.html import environment


def substitution_note(table: VerdictTable) -> str | None:
    """The page's first words where the card's model was not the one run."""
    if table.substituted_model is None:
        return None
    return (
        f"The model was substituted ({table.substituted_model} in place of {table.model}): "
        "this run checks the card's pipeline, not its numbers, so every claim on the card "
        "model's measurements is not checkable."
    )


def render_verdict_markdown(table: VerdictTable) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"## Reproducing: {table.title}", ""]
    note = substitution_note(table)
    if note:
        lines += [f"> **{note}**", ""]
    lines += [f"Card model: `{table.model}`", ""]
    if table.substitutions:
        lines += ["Departures from the card:", ""]
        lines += [f"- {item}" for item in table.substitutions] + [""]
    lines += ["| claim | verdict | claimed | measured | detail |", "|---|---|---|---|---|"]
    lines += [
        f"| {cell(v.text)} | {v.status} | {cell(v.claimed)} | {cell(v.measured)} | "
        f"{cell(v.detail)} |"
        for v in table.verdicts
    ]
    if not table.verdicts:
        lines.append("| (the card makes no checkable claim) | | | | |")
    if table.unspecified:
        lines += ["", "The card does not say:", ""] + [f"- {item}" for item in table.unspecified]
    if table.notes:
        lines += ["", "Assumed:", ""] + [f"- {item}" for item in table.notes]
    return "\n".join(lines) + "\n"


def render_verdict_html(table: VerdictTable) -> str:
    return (
        environment()
        .get_template("verdict.html.j2")
        .render(table=table, note=substitution_note(table))
    )
