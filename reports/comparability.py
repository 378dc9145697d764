"""When two runs' numbers on a task compare like with like: the one rule the report, the
leaderboard and the gate apply.

Results compare only when the task's version, prompt, data files, sample set and sample count
are the same and, for generation tasks, the decoding settings too (a 32-token answer and a
128-token answer do not score alike), and the juries where both runs were judged.
"""

from __future__ import annotations

from medharness.reports.runs import RunData

IDENTITY_FIELDS = {
    "version": "task versions",
    "prompt": "prompts",
    "data_sha256": "data files",
    "sample_ids_sha256": "sample sets (limits or splits)",
    "n": "sample counts (limits)",
}
DECODING = "decoding"
JURY = "jury"
WORDS = {
    **IDENTITY_FIELDS,
    DECODING: "decoding settings (max_new_tokens)",
    JURY: "juries (judges, rubric or how their scores combine)",
}


def differences(run: RunData, other: RunData, task: str) -> list[str]:
    """The fields in which ``run`` and ``other`` differ on ``task``; empty when they compare
    (or when either lacks the task, which the caller reports on its own)."""
    if run is other:
        return []
    ours, theirs = run.manifest.tasks.get(task), other.manifest.tasks.get(task)
    if ours is None or theirs is None:
        return []
    fields = [name for name in IDENTITY_FIELDS if getattr(ours, name) != getattr(theirs, name)]
    if ours.kind == "generate" and run.manifest.decoding != other.manifest.decoding:
        fields.append(DECODING)
    juries = [jury_identity(run), jury_identity(other)]
    if ours.kind == "generate" and all(juries) and juries[0] != juries[1]:
        fields.append(JURY)
    return fields


def jury_identity(run: RunData) -> list[tuple[str, str]]:
    """What a run's judge scores depend on (judges' names are only labels)."""
    return sorted((j["cache_key"], j["combine"]) for j in run.manifest.judges.values())


def describe(fields: list[str]) -> str:
    return ", ".join(WORDS[name] for name in fields)
