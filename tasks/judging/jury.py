"""A jury's score of one answer per criterion, from its judges' verdicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from statistics import fmean
from typing import Literal

from medharness.core.records import Judgment
from medharness.tasks.judging.rubric import Rubric

JuryRule = Literal["mean", "majority"]
OVERALL = "judge_overall"


def metric_name(criterion: str) -> str:
    return f"judge_{criterion}"


def majority(scores: Sequence[float]) -> float:
    """The score most judges gave; a tie goes to the lowest of the tied scores."""
    counts = Counter(scores)
    top = max(counts.values())
    return min(score for score, count in counts.items() if count == top)


def jury_metrics(judgments: Sequence[Judgment], rubric: Rubric, rule: JuryRule) -> dict[str, float]:
    """``judge_<criterion>`` as a fraction of the scale (1 the best) from the judges that
    scored it, absent where none did; ``judge_overall``, their mean, only when every
    criterion has a score (an overall over some criteria would not be comparable)."""
    values: dict[str, float] = {}
    for criterion in rubric.criteria:
        given = [j.scores[criterion.name] for j in judgments if criterion.name in j.scores]
        if given:
            score = fmean(given) if rule == "mean" else majority(given)
            values[metric_name(criterion.name)] = criterion.normalised(score)
    if len(values) == len(rubric.criteria):
        values[OVERALL] = fmean(values.values())
    return values
