"""The user cache folder and the content hashes of weight files kept in it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from medharness.core.io import (
    append_jsonl_durable,
    read_jsonl_prefix,
    sha256_file,
    write_json_atomic,
)


def cache_root() -> Path:
    return Path(os.environ.get("MEDHARNESS_CACHE", Path.home() / ".cache" / "medharness"))


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_sha256(folder: Path) -> str | None:
    """sha256 over the weight files of a model or adapter folder (name + content hash each).

    File hashes are cached by path, size and mtime: a multi-GB checkpoint is read once."""
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        return None
    cache_file = cache_root() / "file-hashes.json"
    try:
        known = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        known = {}
    combined = hashlib.sha256()
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in known:
            known[key] = sha256_file(path)
        combined.update(f"{path.name}  {known[key]}\n".encode())
    with contextlib.suppress(OSError):  # a read-only cache only costs re-hashing next time
        write_json_atomic(cache_file, known)
    return combined.hexdigest()


class VerdictCache:
    """A judge's verdicts: answer key -> cached verdict, appended durably."""

    def __init__(self, key: str) -> None:
        self.path = cache_root() / "judgments" / f"{key}.jsonl"
        self.known = {row["key"]: row for row in read_jsonl_prefix(self.path)}
        self.writable = True

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.known.update((row["key"], row) for row in rows)
        if not self.writable:
            return
        try:
            append_jsonl_durable(self.path, rows)
        except OSError as exc:  # judging goes on; only a re-run pays again
            self.writable = False
            print(
                f"medharness: judgments not cached ({exc.strerror}: {self.path})", file=sys.stderr
            )
