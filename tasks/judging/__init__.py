"""Rubric grading by a jury of LLM judges, the pure parts: the rubric, the judge's prompt,
reading a verdict from the judge's own output, and the jury's per-answer scores.

No model is called here; ``medharness.judge`` puts the prompts to the judges.
"""
