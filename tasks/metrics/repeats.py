"""What several sampled answers to one question add up to: pass@k and the majority vote."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from ``n`` answers of which ``c`` are right (Chen et
    al. 2021, as human-eval and lm-eval compute it): 1 - C(n-c, k) / C(n, k), the chance
    that k answers drawn without replacement from the n hold a right one."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, not n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_vote(votes: Sequence[int]) -> int:
    """The option most answers chose (an index; -1 for answers that named none, which do not
    vote, and where none did). A tie goes to the tied option drawn first: the one whose
    earliest vote came in the lowest repeat."""
    counts = Counter(vote for vote in votes if vote >= 0)
    if not counts:
        return -1
    top = max(counts.values())
    return next(vote for vote in votes if vote >= 0 and counts[vote] == top)
