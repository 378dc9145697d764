"""MedCalc-Bench: compute a clinical score or value from a patient note.

Dataset: the test CSV of https://github.com/ncbi-nlp/MedCalc-Bench (55 calculators; columns
Row Number, Calculator ID, Calculator Name, Category, Output Type, Note ID, Note Type,
Patient Note, Question, Relevant Entities, Ground Truth Answer, Lower Limit, Upper Limit,
Ground Truth Explanation). Paper: Khandekar et al., "MedCalc-Bench: Evaluating Large
Language Models for Medical Calculations", NeurIPS 2024 Datasets and Benchmarks.
License: CC BY-SA 4.0 (the card of the hub copy ncbi/MedCalc-Bench-v1.0; the repository
ships no license file).

Prompt, answer extraction and scoring follow the repository's ``evaluation/run.py``
(``zero_shot``, ``extract_answer``) and ``evaluation/evaluate.py`` (``check_correctness``):
the zero-shot prompt asks for a JSON dict with ``step_by_step_thinking`` and ``answer``; the
last ``answer": ...}`` is read and parsed by the calculator's output type (dates exactly,
weeks and days exactly, integers rounded then exactly, decimals within [Lower Limit, Upper
Limit]). Where medharness differs (README, MedCalc-Bench): the instruction their code sends
as a system message opens the user turn; a reasoning trace is cut out before the answer is
read; an answer written as an expression (``str(round(...))``) is parsed and computed, not
run with ``eval``, and comparisons in it (their "is odd") are not evaluated.
"""

from __future__ import annotations

import ast
import csv
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from medharness.core.errors import UserError
from medharness.core.io import sha256_file
from medharness.tasks.answers import split_reasoning
from medharness.tasks.base import AnswerRead, AnswerScoring, LoadedData, Sample, Task, require_text

VERSION = "1"
FILE = "test_data.csv"
OBTAIN = (
    "MedCalc-Bench: `medharness data pull medcalc_bench`, or put the repository's "
    f"datasets/{FILE} into medcalc_bench/"
)
COLUMNS = (
    "Row Number", "Calculator ID", "Calculator Name", "Category", "Output Type", "Note ID",
    "Patient Note", "Question", "Ground Truth Answer", "Lower Limit", "Upper Limit",
)  # fmt: skip
OUTPUT_TYPES = ("decimal", "integer", "date")  # the README's types; weeks/days is "integer"

# evaluation/evaluate.py's calculator lists: scoring goes by calculator, as theirs does
DATE_CALCULATORS = frozenset({13, 68})
WEEKS_DAYS_CALCULATORS = frozenset({69})
INTEGER_CALCULATORS = frozenset(
    {4, 15, 16, 17, 18, 20, 21, 25, 27, 28, 29, 32, 33, 36, 43, 45, 48, 51}
)
DECIMAL_CALCULATORS = frozenset(
    {2, 3, 5, 6, 7, 8, 9, 10, 11, 19, 22, 23, 24, 26, 30, 31, 38, 39, 40, 44, 46, 49}
    | {56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67}
)
Kind = Literal["date", "weeks_days", "integer", "decimal"]

# evaluation/run.py's zero_shot(): the system message, then the user message
INSTRUCTION = (
    "You are a helpful assistant for calculating a score for a given patient note. Please "
    "think step-by-step to solve the question and then generate the required score. Your "
    'output should only contain a JSON dict formatted as {"step_by_step_thinking": '
    'str(your_step_by_step_thinking_procress_to_solve_the_question), "answer": '
    "str(short_and_direct_answer_of_the_question)}."
)
USER_TEMPLATE = (
    "Here is the patient note:\n{note}\n\nHere is the task:\n{question}\n\nPlease directly "
    'output the JSON dict formatted as {{"step_by_step_thinking": '
    'str(your_step_by_step_thinking_procress_to_solve_the_question), "answer": '
    "str(short_and_direct_answer_of_the_question)}}:"
)
PLACEHOLDERS = (
    "str(short_and_direct_answer_of_the_question)",
    "str(value which is the answer to the question)",
    "X.XX",
)
WEEKS_DAYS = r"\(?[\"\']?(\d+)\s*(weeks?)?[\"\']?,?\s*[\"\']?(\d+)\s*(days?)?[\"\']?\s*\)?"
DATE = r"^(0?[1-9]|1[0-2])\/(0?[1-9]|[12][0-9]|3[01])\/(\d{4})"


def kind_of(calculator_id: int) -> Kind | None:
    """How a calculator's answer is read and scored (their branches, in their order)."""
    if calculator_id in DATE_CALCULATORS:
        return "date"
    if calculator_id in WEEKS_DAYS_CALCULATORS:
        return "weeks_days"
    if calculator_id in INTEGER_CALCULATORS:
        return "integer"
    if calculator_id in DECIMAL_CALCULATORS:
        return "decimal"
    return None


def prompt(note: str, question: str) -> str:
    """The user turn: their system instruction, a blank line, their user message."""
    return f"{INSTRUCTION}\n\n{USER_TEMPLATE.format(note=note, question=question)}"


def stated_answer(text: str) -> str | None:
    """The value of the last ``answer": ...}`` in the reply, quotes stripped; None where there
    is none, or only the prompt's placeholder."""
    found = re.findall(r'[Aa]nswer":\s*(.*?)\}', text)
    if not found:
        return None
    value = found[-1].strip().strip('"')
    return None if value in PLACEHOLDERS else value


def parse_answer(value: str, kind: Kind) -> str | None:
    """The answer in the form it is scored in (their ``extract_answer``), None where the
    value holds none."""
    if kind == "date":
        date = re.search(DATE, value)
        return f"{int(date.group(1)):02}/{int(date.group(2)):02}/{date.group(3)}" if date else None
    if kind == "weeks_days":
        cleaned = value.replace("[", "(").replace("]", ")").replace("'", "").replace('"', "")
        pair = re.search(WEEKS_DAYS, cleaned)
        return f"({pair.group(1)}, {pair.group(3)})" if pair else None
    if kind == "integer":
        return _integer(value)
    return _decimal(value)


def _integer(value: str) -> str | None:
    """ "3 out of 5" -> 3; a list "3, 4, 5" -> its length; else the last number."""
    out_of = re.search(r"(\d+) out of", value)
    if out_of:
        return out_of.group(1)
    listed = re.search(r"-?\d+(, ?-?\d+)+", value)
    if listed:
        return str(len(listed.group(0).split(",")))
    numbers = re.findall(r"(-?\d+(\.\d+)?)", value)
    return numbers[-1][0] if numbers else None


def _decimal(value: str) -> str | None:
    """``str(expression)`` -> its value; else a value before mL/min/1.73; else the last
    percentage, as a fraction; else the last number."""
    expression = re.search(r"str\((.*)\)", value)
    if expression:
        result = evaluate(_their_rewrite(expression.group(1)))
        return None if result is None else str(result)
    gfr = re.search(r"(-?\d+(\.\d+)?)\s*mL/min/1.73", value)
    if gfr:
        return str(float(gfr.group(1)))
    percents = re.findall(r"(-?\d+(\.\d+)?)\%", value)
    if percents:
        return str(float(percents[-1][0]) / 100)
    numbers = re.findall(r"(-?\d+(\.\d+)?)", value)
    return str(float(numbers[-1][0])) if numbers else None


# their rewrites of an answer written as an expression, in their order
REWRITES = (
    ("^", "**"), ("is odd", "% 2 == 1"), ("is even", "% 2 == 0"), ("sqrt", "math.sqrt"),
    (".math", ""), ("weight", ""), ("height", ""), ("mg/dl", ""), ("g/dl", ""), ("mmol/L", ""),
    ("kg", ""), ("g", ""), ("mEq/L", ""),
)  # fmt: skip


def _their_rewrite(expression: str) -> str:
    """The expression as their code evaluates it: rewritten, cut at a comment, brackets
    balanced."""
    for old, new in REWRITES:
        expression = expression.replace(old, new)
    expression = expression.split("#")[0]
    opened, closed = expression.count("("), expression.count(")")
    return "(" * (closed - opened) + expression + ")" * (opened - closed)


def _round(number: float, digits: float | None = None) -> float:
    """``round``, its digits given as a float here (every number is parsed as one)."""
    return round(number) if digits is None else round(number, int(digits))


FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "pow": pow, "round": _round, "abs": abs, "int": int, "float": float,
}  # fmt: skip  # what their eval allows (no other builtins)
MODULE_FUNCTIONS = ("sqrt", "exp", "log", "log10", "log2", "pow", "floor", "ceil", "fabs")
OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}  # fmt: skip


class _Refused(Exception):
    """Part of an expression medharness does not evaluate."""


def evaluate(expression: str) -> float | None:
    """The value of an arithmetic expression a model wrote, where their ``eval`` (numbers,
    arithmetic, ``min pow round abs int float``, ``math.``/``np.`` functions) would give
    one; None otherwise. Model text is parsed, never run; floats keep it bounded."""
    try:
        value = _value(ast.parse(expression.strip(), mode="eval").body)
        return value if math.isfinite(value) else None
    except (SyntaxError, ValueError, TypeError, ArithmeticError, RecursionError, _Refused):
        return None


def _value(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)  # a bool too, as their eval takes True for 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _value(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, ast.Call) and not node.keywords:
        return float(_function(node.func)(*(_value(arg) for arg in node.args)))
    raise _Refused


def _function(node: ast.expr) -> Callable[..., float]:
    if isinstance(node, ast.Name) and node.id in FUNCTIONS:
        return FUNCTIONS[node.id]
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("math", "np", "numpy")
        and node.attr in MODULE_FUNCTIONS
    ):
        return cast(Callable[..., float], getattr(math, node.attr))
    raise _Refused


def is_correct(answer: str, sample: Mapping[str, Any]) -> bool:
    """Their ``check_correctness`` on a parsed answer and the row's ground truth."""
    kind: Kind = sample["kind"]
    truth = str(sample["ground_truth"])
    if kind == "date":
        return _date(answer) == _date(truth)
    if kind == "weeks_days":
        expected = re.search(WEEKS_DAYS, truth)
        given = re.search(WEEKS_DAYS, answer)
        if expected is None or given is None:
            return False
        return (int(given.group(1)), int(given.group(3))) == (
            int(expected.group(1)),
            int(expected.group(3)),
        )
    if kind == "integer":
        return round(float(answer)) == float(truth)
    return float(sample["lower_limit"]) <= float(answer) <= float(sample["upper_limit"])


def _date(text: str) -> datetime:
    return datetime.strptime(text, "%m/%d/%Y")


def score_answer(sample: Sample, text: str) -> AnswerRead:
    """Accuracy and invalid_answer of one reply; a reply whose answer cannot be read, or
    read but not scored (a date that is no date), counts wrong and invalid."""
    reply = split_reasoning(text).reply
    stated = stated_answer(reply)
    parsed = None if stated is None else parse_answer(stated, sample.metadata["kind"])
    correct = False
    if parsed is not None:
        try:
            correct = is_correct(parsed, sample.metadata)
        except (ValueError, OverflowError):
            parsed = None
    return AnswerRead(parsed, {"acc": float(correct), "invalid_answer": float(parsed is None)})


def _settings() -> dict[str, Any]:
    return {
        "source": "ncbi-nlp/MedCalc-Bench evaluation/run.py (zero_shot, extract_answer) and "
        "evaluation/evaluate.py (check_correctness)",
        "message": prompt("{Patient Note}", "{Question}"),
        "extraction": "the last 'answer\": ...}' of the reply outside any reasoning trace; "
        "read by calculator: date MM/DD/YYYY, (weeks, days), integer (N out of, list "
        "length, else the last number), decimal (mL/min/1.73, else last %, else last number)",
        "correct": "date and (weeks, days) equal; integer rounded equal; decimal within "
        "[Lower Limit, Upper Limit]",
        "invalid_answer": "no answer could be read (counted wrong)",
        "budget": "generation.cot_max_new_tokens",
        "interval": "Clopper-Pearson exact",
    }


SCORING = AnswerScoring(
    score=score_answer, metric_names=("acc", "invalid_answer"), settings=_settings
)


def load_rows(path: Path) -> list[Sample]:
    """Every row of the CSV as a sample (rows numbered as the file's lines)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return samples_of(reader.fieldnames or [], reader, str(path), first=2)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc})") from None


def samples_of(
    columns: Sequence[str], rows: Iterable[Mapping[str, Any]], where: str, *, first: int
) -> list[Sample]:
    """Rows in the official columns (CSV text, or the hub copy's typed values) as samples;
    a bad row is one error naming ``where``, the row and the column."""
    missing = [column for column in COLUMNS if column not in columns]
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(map(repr, missing))}")
    return [
        row_sample({k: "" if v is None else str(v) for k, v in row.items()}, f"{where}: row {n}")
        for n, row in enumerate(rows, first)
    ]


def hub_samples(rows: list[dict[str, Any]], where: str) -> tuple[list[Sample], dict[str, int]]:
    """ncbi/MedCalc-Bench-v1.0's rows: the CSV's columns, numbered from 1."""
    return samples_of(list(rows[0]) if rows else [], rows, where, first=1), {}


def row_sample(row: dict[str, str], where: str) -> Sample:
    """One CSV row (``where`` names file and line) as a sample."""
    calculator = _number(row, "Calculator ID", where)
    kind = kind_of(int(calculator)) if calculator.is_integer() else None
    if kind is None:
        raise UserError(
            f"{where}: Calculator ID: no MedCalc-Bench calculator {row['Calculator ID']!r}"
        )
    output_type = (row["Output Type"] or "").strip()
    if output_type not in OUTPUT_TYPES:
        raise UserError(
            f"{where}: Output Type: {output_type!r} is none of {', '.join(OUTPUT_TYPES)}"
        )
    lower, upper = _limit(row, "Lower Limit", kind, where), _limit(row, "Upper Limit", kind, where)
    if isinstance(lower, float) and isinstance(upper, float) and lower > upper:
        raise UserError(f"{where}: Lower Limit: {lower} is above the Upper Limit {upper}")
    truth = require_text(row["Ground Truth Answer"], where, "Ground Truth Answer").strip()
    return Sample(
        doc_id=require_text(row["Row Number"], where, "Row Number").strip(),
        prompt=prompt(
            require_text(row["Patient Note"], where, "Patient Note"),
            require_text(row["Question"], where, "Question"),
        ),
        target=truth,
        metadata={
            "calculator_id": int(calculator),
            "calculator": require_text(row["Calculator Name"], where, "Calculator Name").strip(),
            "category": require_text(row["Category"], where, "Category").strip(),
            "output_type": output_type,
            "kind": kind,
            "note_id": (row["Note ID"] or "").strip(),
            "ground_truth": truth,
            "lower_limit": lower,
            "upper_limit": upper,
        },
    )


def _limit(row: dict[str, str], column: str, kind: Kind, where: str) -> float | str:
    """A limit: a number for numeric calculators; date and (weeks, days) rows repeat their
    answer as both limits, kept as text (their scoring never reads them)."""
    if kind in ("decimal", "integer"):
        return _number(row, column, where)
    return require_text(row[column], where, column).strip()


def _number(row: dict[str, str], column: str, where: str) -> float:
    """A numeric column, or one error naming file, row and column."""
    text = (row[column] or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or math.isinf(value):
        raise UserError(f"{where}: {column}: {text!r} is not a number")
    return value


def load(folder: Path) -> LoadedData:
    path = folder / FILE
    if not path.is_file():
        raise UserError(f"MedCalc-Bench not found: no {path}. {OBTAIN}")
    return LoadedData(load_rows(path), {f"medcalc_bench/{FILE}": sha256_file(path)})


MEDCALC = Task(
    name="medcalc",
    version=VERSION,
    kind="generate",
    summary="MedCalc-Bench test set, zero-shot JSON chain of thought; accuracy by the "
    "paper's rules (decimals within the row's limits)",
    data_subdir="medcalc_bench",
    obtain_hint=OBTAIN,
    load=load,
    metric_names=("acc", "invalid_answer"),
    prompt_template=prompt("{Patient Note}", "{Question}") + " (as the user turn)",
    breakdown_keys=("category", "calculator"),
    answer_scoring=SCORING,
    reasoned=True,
)
