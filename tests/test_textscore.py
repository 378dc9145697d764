"""tasks.textscore against the references it replaces: rouge_score 0.1.2 and sacrebleu.

Cases are data: hand-picked texts that stress each tokenizer rule and tie-breaking path, random
texts from a five-word vocabulary (many equal-length LCS alignments, so rougeLsum's union
depends on which one is taken), and real MedQuAD answers scored against each other.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import sacrebleu
from conftest import REAL_DATA
from rouge_score import rouge_scorer

from medharness.tasks.metrics.text import ROUGE_TYPES
from medharness.tasks.textscore import bleu_statistics, rouge_scores

TOLERANCE = 1e-12  # the issue asks 1e-6; the arithmetic is rouge_score's own, so equality holds

LONG = " ".join(["alpha beta gamma alpha delta"] * 30)  # 150 tokens: LCS rows over 2+ words
# every character str.split() splits on, as Python itself defines them
EVERY_SPACE = "".join(
    f"w{i}{chr(c)}" for i, c in enumerate(c for c in range(0x110000) if chr(c).isspace())
)

# (prediction, reference): each line names what it exercises
CASES = [
    ("", ""),
    ("", "a reference"),
    ("a prediction", ""),
    ("   \n\n ", "\n"),  # whitespace and blank lines only
    ("The cat sat on the mat.", "the cat sat on the mat"),
    ("a b c\nd e f\n\na b", "a b\nc d\ne f a"),  # several sentences, a blank line
    ("a b\r\nc d\n", "a b\nc\n"),  # carriage returns stay inside sentences
    ("x y x y x\ny x y", "y x y x\nx y\ny y x x"),  # ties everywhere
    (f"{LONG}\n{LONG[:90]}", f"{LONG[40:]}\ngamma delta\n{LONG}"),  # long sentences
    (LONG, LONG[::-1]),
    ("Kelvin 5\u212a, \u0130stanbul, caf\u00e9 na\u00efve", "kelvin 5k istanbul cafe"),  # lower()
    ("\u65e5\u672c\u8a9e \u30c6\u30ad\u30b9\u30c8 1.5 \U0001f600", "\u65e5\u672c\u8a9e 1.5"),
    ("a\x00b c", "a b c"),  # the separator byte inside a text
    ("Costs $1,000.50 - 3-4 items, e.g. A.B.C. etc.,, end.", "costs 1,000 3 - 4 e.g. end"),
    ("x.,y 5-6 -5 a-b 3.x .5 ,7 9, 9. (a) [b] {c} 'q' \"r\" a/b", "x . , y 5 - 6"),
    ("&amp; &quot;q&quot; &lt;tag&gt; <skipped> word-\nnext & more", '& "q" <tag> wordnext'),
    ("a\tb\xa0c\u2028d\u3000e\x1cf\u2009g\x85h\u1680i\u202fj\u205fk", "a b c d e f g h"),
    (EVERY_SPACE, "w1 w2 w3 w20"),
    ("already tokenized .  ", "already tokenized ."),
    ("line one -\nline two", "line one line two"),
]


def _random_texts(seed: int, n: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = ["a", "b", "c", "d", "e"]

    def text() -> str:
        tokens = [rng.choice(words) for _ in range(rng.randint(0, 90))]
        for _ in range(rng.randint(0, 6)):
            tokens.insert(rng.randint(0, len(tokens)), rng.choice(["\n", ".", ",", "-", "5"]))
        return " ".join(tokens)

    return [text() for _ in range(n)], [text() for _ in range(n)]


def _assert_rouge_equal(predictions: list[str], references: list[str]) -> None:
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    got = rouge_scores(predictions, references)
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        expected = scorer.score(reference, prediction)
        for name in ROUGE_TYPES:
            assert got[name][i] == pytest.approx(expected[name].fmeasure, abs=TOLERANCE), (
                name,
                prediction,
                reference,
            )


def _assert_bleu_equal(predictions: list[str], references: list[str]) -> None:
    metric = sacrebleu.BLEU()
    expected = np.asarray(metric._extract_corpus_statistics(predictions, [references]))
    got = bleu_statistics(predictions, references)
    mismatched = [i for i in range(len(predictions)) if not (got[i] == expected[i]).all()]
    assert not mismatched, [(predictions[i], references[i]) for i in mismatched[:3]]


@pytest.mark.parametrize(("prediction", "reference"), CASES)
def test_case_equals_rouge_score(prediction: str, reference: str) -> None:
    _assert_rouge_equal([prediction], [reference])
    _assert_rouge_equal([reference], [prediction])


@pytest.mark.parametrize(("prediction", "reference"), CASES)
def test_case_equals_sacrebleu_statistics(prediction: str, reference: str) -> None:
    _assert_bleu_equal([prediction, reference], [reference, prediction])


def test_cases_scored_together_equal_one_by_one() -> None:
    """Distinct texts are tokenised once for the batch; the batch must not mix them up."""
    predictions = [p for p, _ in CASES] * 2
    references = [r for _, r in CASES] + [r for _, r in reversed(CASES)]
    _assert_rouge_equal(predictions, references)
    _assert_bleu_equal(predictions, references)


@pytest.mark.parametrize("seed", range(3))
def test_random_small_vocabulary_texts(seed: int) -> None:
    predictions, references = _random_texts(seed, 150)
    _assert_rouge_equal(predictions, references)
    _assert_bleu_equal(predictions, references)


def test_many_pairs_split_across_threads_keep_their_order() -> None:
    predictions, references = _random_texts(7, 3000)
    got = rouge_scores(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    for i in range(0, 3000, 97):
        expected = scorer.score(references[i], predictions[i])
        for name in ROUGE_TYPES:
            assert got[name][i] == pytest.approx(expected[name].fmeasure, abs=TOLERANCE)
    _assert_bleu_equal(predictions, references)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])


@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_medquad_answers_scored_against_each_other() -> None:
    """Every answer with non-ASCII text, markup, entities or several lines (the risky ones),
    and a random sample of the rest, each scored against another answer."""
    from medharness.tasks.medquad import load_pairs

    assert REAL_DATA is not None
    answers = [pair.answer for pair in load_pairs(REAL_DATA / "medquad")[0]]
    rng = random.Random(0)
    risky = [a for a in answers if not a.isascii() or "&" in a or "<" in a]
    multiline = [a for a in answers if a.count("\n") > 2 and len(a) < 2500]
    plain = rng.sample(answers, 300)
    predictions = risky + rng.sample(multiline, 60) + plain
    references = rng.sample(answers, len(predictions))
    _assert_bleu_equal(predictions, references)
    short = [
        i
        for i, (p, r) in enumerate(zip(predictions, references, strict=True))
        if len(p) * len(r) < 4_000_000
    ]  # rouge_score's pure-Python LCS is quadratic
    _assert_rouge_equal([predictions[i] for i in short], [references[i] for i in short])
