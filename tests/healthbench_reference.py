"""HealthBench's reference scoring, copied verbatim from openai/simple-evals
healthbench_eval.py at commit 9e2fafd122f057f373467fc0d45901889d8c4926 (``RubricItem``,
``calculate_score``, ``_compute_clipped_stats``'s mean, the per-example metrics of
``HealthBenchEval.grade_sample`` and the collection of ``_aggregate_get_clipped_mean``),
wrapped only where they were methods, so tests compare medharness with the published code."""
# ruff: noqa

from collections import defaultdict

import numpy as np


class RubricItem:
    def __init__(self, criterion: str, points: float, tags: list[str]):
        self.criterion = criterion
        self.points = points
        self.tags = tags

    def __str__(self):
        return f"[{self.points}] {self.criterion}"

    @classmethod
    def from_dict(cls, d: dict):
        return cls(
            criterion=d["criterion"],
            points=d["points"],
            tags=d["tags"],
        )


def calculate_score(
    rubric_items: list[RubricItem], grading_response_list: list[dict]
) -> float | None:
    total_possible_points = sum(
        rubric_item.points for rubric_item in rubric_items if rubric_item.points > 0
    )
    if total_possible_points == 0:
        # should not happen for overall score, but may happen for tags
        return None

    achieved_points = sum(
        rubric_item.points
        for rubric_item, grading_response in zip(rubric_items, grading_response_list, strict=True)
        if grading_response["criteria_met"]
    )
    overall_score = achieved_points / total_possible_points
    return overall_score


def clipped_mean(values: list):
    # _compute_clipped_stats(values, "mean")
    return np.clip(np.mean(values), 0, 1)


def grade_sample_metrics(rubric_items, grading_response_list, example_tags) -> dict:
    # HealthBenchEval.grade_sample, from "compute the overall score" to the rubric tag scores
    overall_score = calculate_score(rubric_items, grading_response_list)
    assert overall_score is not None
    metrics = {
        "overall_score": overall_score,
    }

    # compute scores for example-level tags)
    example_tag_scores = {tag: overall_score for tag in example_tags}
    assert len(example_tag_scores) == len(example_tags)  # No duplicates.
    metrics.update(example_tag_scores)

    # compute scores for rubric-level tags
    rubric_tag_items_grades = defaultdict(list)
    for rubric_item, grading_response in zip(rubric_items, grading_response_list):
        curr_item_tags = set()  # Ensure no duplicates in a rubric item.
        for tag in rubric_item.tags:
            rubric_tag_items_grades[tag].append((rubric_item, grading_response))
            assert tag not in curr_item_tags
            curr_item_tags.add(tag)

    rubric_tag_scores = {}
    for tag, items_grades in rubric_tag_items_grades.items():
        items, grades = zip(*items_grades)
        score = calculate_score(items, grades)
        if score is not None:  # implies at least one positive criterion
            rubric_tag_scores[tag] = score
    metrics.update(rubric_tag_scores)
    return metrics


def aggregate_means(per_example_metrics: list[dict]) -> dict:
    # _aggregate_get_clipped_mean: every metric's values over the examples that have it
    name2values = defaultdict(list)
    for metrics in per_example_metrics:
        for name, value in metrics.items():
            name2values[name].append(value)
    return {name: clipped_mean(values) for name, values in name2values.items()}
