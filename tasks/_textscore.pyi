# Types of the C kernels in _textscore.c (arrays are bytes-like: int32 ids, int64 offsets).
from typing_extensions import Buffer

def tokenize_13a(data: Buffer, /) -> bytes: ...
def intern(
    data: Buffer, text_sep: int, sentence_sep: int, /
) -> tuple[bytes, bytes, bytes, bytes, int]: ...
def overlaps(
    ids: Buffer, text_starts: Buffer, left: Buffer, right: Buffer, vocab: int, order: int, /
) -> bytes: ...
def lcs(ids: Buffer, text_starts: Buffer, left: Buffer, right: Buffer, vocab: int, /) -> bytes: ...
def summary_lcs(
    ids: Buffer,
    text_starts: Buffer,
    sentence_starts: Buffer,
    text_sentence_starts: Buffer,
    refs: Buffer,
    preds: Buffer,
    vocab: int,
    /,
) -> bytes: ...
