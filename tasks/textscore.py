"""ROUGE (rouge_score 0.1.2) and BLEU statistics (sacrebleu, 13a) for whole corpora at once.

The same numbers as the reference packages, computed in a C kernel (``tasks/_textscore.c``):
each distinct text is tokenised once, its tokens become integer ids, and n-gram overlaps and
longest common subsequences are counted over ids, pairs split across the machine's cores. Python
keeps what must follow Python's string semantics (``str.lower``, ``str.rstrip``, the 13a
entity replacements). ``tests/test_textscore.py`` checks every number against rouge_score and
sacrebleu themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from medharness.tasks import _textscore

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BLEU_ORDER = 4
PAIRS_PER_THREAD = 512  # below this a thread costs more than it saves
_KEEP = b"abcdefghijklmnopqrstuvwxyz0123456789\n\x00"
# rouge_score's tokenizer keeps runs of [a-z0-9] after lower-casing; everything else splits.
# The table lower-cases ASCII too, so ASCII texts skip str.lower.
_ROUGE_BYTES = bytes(c if c in _KEEP else c + 32 if 65 <= c <= 90 else ord(" ") for c in range(256))


@dataclass(frozen=True)
class _Corpus:
    """Distinct texts as token ids: text t is ids[starts[t]:starts[t + 1]]."""

    ids: np.ndarray
    starts: np.ndarray
    vocab: int
    sentence_starts: np.ndarray
    text_sentences: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)


def _intern(data: bytes, text_sep: str, sentence_sep: str | None) -> _Corpus:
    ids, starts, sentences, text_sentences, vocab = _textscore.intern(
        data, ord(text_sep), -1 if sentence_sep is None else ord(sentence_sep)
    )
    return _Corpus(
        ids=np.frombuffer(ids, dtype=np.int32),
        starts=np.frombuffer(starts, dtype=np.int64),
        vocab=vocab,
        sentence_starts=np.frombuffer(sentences, dtype=np.int64),
        text_sentences=np.frombuffer(text_sentences, dtype=np.int64),
    )


def _rouge_corpus(texts: Sequence[str]) -> _Corpus:
    """rouge_score's tokens: lower case, runs of [a-z0-9]; newline-separated sentences."""
    return _intern(b"\x00".join(map(_rouge_bytes, texts)).translate(_ROUGE_BYTES), "\x00", "\n")


def _rouge_bytes(text: str) -> bytes:
    if "\x00" in text:  # the text separator; rouge_score splits there anyway
        text = text.replace("\x00", " ")
    if text.isascii():
        return text.encode("ascii")
    # non-ASCII characters can lower-case to ASCII letters (the Kelvin sign to "k")
    return text.lower().encode("ascii", "replace")


def _prepare_13a(text: str) -> str:
    """What sacrebleu does in Python before its 13a regular expressions."""
    line = text.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&")
        line = line.replace("&lt;", "<").replace("&gt;", ">")
    return f" {line} "


def _bleu_corpus(texts: Sequence[str]) -> _Corpus:
    """sacrebleu's 13a tokens; texts are newline-separated (13a turns newlines into spaces)."""
    prepared = "\n".join(map(_prepare_13a, texts)).encode("utf-8", "surrogatepass")
    return _intern(_textscore.tokenize_13a(prepared), "\n", None)


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _per_pair(
    kernel: Callable[..., bytes],
    before: tuple[Any, ...],
    left: np.ndarray,
    right: np.ndarray,
    after: tuple[Any, ...] = (),
) -> np.ndarray:
    """``kernel(*before, left, right, *after)``, one int64 per pair. Kernels release the GIL,
    so large batches are split into chunks run on several threads."""
    chunks = [c for c in np.array_split(np.arange(len(left)), _threads()) if len(c)]
    if len(left) < PAIRS_PER_THREAD or len(chunks) <= 1:
        return np.frombuffer(kernel(*before, left, right, *after), dtype=np.int64)
    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = pool.map(lambda c: kernel(*before, left[c], right[c], *after), chunks)
        return np.concatenate([np.frombuffer(p, dtype=np.int64) for p in parts])


def _distinct(
    predictions: Sequence[str], references: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each distinct text once, and the index of every prediction and reference into them."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    index: dict[str, int] = {}
    pred = np.fromiter(
        (index.setdefault(t, len(index)) for t in predictions), np.int64, len(predictions)
    )
    ref = np.fromiter(
        (index.setdefault(t, len(index)) for t in references), np.int64, len(references)
    )
    return list(index), pred, ref


def _overlaps(corpus: _Corpus, pred: np.ndarray, ref: np.ndarray, order: int) -> np.ndarray:
    """Clipped count of the order-grams each prediction shares with its reference."""
    tokens = (corpus.ids, corpus.starts)
    return _per_pair(_textscore.overlaps, tokens, pred, ref, (corpus.vocab, order))


def _grams(lengths: np.ndarray, order: int) -> np.ndarray:
    """How many order-grams texts of these lengths hold."""
    return np.maximum(lengths - order + 1, 0)


def _fmeasure(hits: np.ndarray, pred_count: np.ndarray, ref_count: np.ndarray) -> np.ndarray:
    """rouge_score's F-measure, with its divisions in its order (bit-identical floats)."""
    precision = hits / np.maximum(pred_count, 1)
    recall = hits / np.maximum(ref_count, 1)
    total = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2 * precision * recall / total
    return np.where(total > 0, f, 0.0)


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """F-measures of rouge1, rouge2, rougeL and rougeLsum per pair, as
    ``RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)`` gives."""
    texts, pred, ref = _distinct(predictions, references)
    if not texts:
        return {name: np.zeros(0) for name in ROUGE_TYPES}
    corpus = _rouge_corpus(texts)
    lengths = corpus.lengths()
    pred_len, ref_len = lengths[pred], lengths[ref]
    tokens = (corpus.ids, corpus.starts)
    scores = {}
    for order in (1, 2):
        hits = _overlaps(corpus, pred, ref, order)
        scores[f"rouge{order}"] = _fmeasure(hits, _grams(pred_len, order), _grams(ref_len, order))
    lcs = _per_pair(_textscore.lcs, tokens, pred, ref, (corpus.vocab,))
    scores["rougeL"] = _lcs_fmeasure(lcs, pred_len, ref_len)
    sentences = (*tokens, corpus.sentence_starts, corpus.text_sentences)
    union = _per_pair(_textscore.summary_lcs, sentences, ref, pred, (corpus.vocab,))
    scores["rougeLsum"] = _lcs_fmeasure(union, pred_len, ref_len)
    return scores


def _lcs_fmeasure(hits: np.ndarray, pred_len: np.ndarray, ref_len: np.ndarray) -> np.ndarray:
    """rouge_score scores an empty side as 0 for the LCS types (not via max(count, 1))."""
    return np.where((pred_len > 0) & (ref_len > 0), _fmeasure(hits, pred_len, ref_len), 0.0)


def bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacrebleu BLEU's per-sentence statistics with one reference each, one row per pair:
    hypothesis length, reference length, matches for orders 1-4, totals for orders 1-4."""
    texts, pred, ref = _distinct(predictions, references)
    stats = np.zeros((len(pred), 2 + 2 * BLEU_ORDER), dtype=np.int64)
    if not texts:
        return stats
    corpus = _bleu_corpus(texts)
    lengths = corpus.lengths()
    stats[:, 0], stats[:, 1] = lengths[pred], lengths[ref]
    for order in range(1, BLEU_ORDER + 1):
        stats[:, 1 + order] = _overlaps(corpus, pred, ref, order)
        stats[:, 1 + BLEU_ORDER + order] = _grams(lengths[pred], order)
    return stats
