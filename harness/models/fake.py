"""A scripted model that makes every CLI path testable offline."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medharness.core.errors import UserError
from medharness.core.io import sha256_file
from medharness.models.base import Progress

FILLER_WORDS = ("the", "a", "is", "of", "and", "to", "in", "may", "include", "patients")


@dataclass
class FakeModel:
    """Answers from a script; unmatched requests get deterministic pseudo-random scores.

    Script (YAML or JSON)::

        generate:                      # first rule whose `match` is in the message wins
          - {match: "glaucoma", output: "Glaucoma is an eye disease."}
        default_output: "I am not sure."
        choose:                        # favour a continuation when `match` is in the context
          - {match: "orthopaedic", answer: "B"}
        babble_words: 80               # instead of default_output: that many pseudo-random
        seed: 0                        # words drawn from the message (differs per seed)
        delay: 0.0                     # seconds per call, to stand in for a slow model
        trace_file: calls.log          # appends one line per request (tests of resuming)
    """

    path: Path
    generate_rules: list[dict[str, str]] = field(default_factory=list)
    default_output: str = ""
    choose_rules: list[dict[str, str]] = field(default_factory=list)
    babble_words: int = 0
    seed: int = 0
    delay: float = 0.0
    trace_file: Path | None = None
    chunk_size: int = 16

    @classmethod
    def from_file(cls, path: Path) -> FakeModel:
        if not path.is_file():
            raise UserError(f"fake model script not found: {path}")
        try:
            script = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({exc})") from None
        known = {
            "generate",
            "default_output",
            "choose",
            "babble_words",
            "seed",
            "delay",
            "trace_file",
        }
        unknown = set(script) - known
        if not isinstance(script, dict) or unknown:
            raise UserError(f"{path}: unknown keys in fake model script: {sorted(unknown)}")
        return cls(
            path=path,
            generate_rules=list(script.get("generate", [])),
            default_output=str(script.get("default_output", "")),
            choose_rules=list(script.get("choose", [])),
            babble_words=int(script.get("babble_words", 0)),
            seed=int(script.get("seed", 0)),
            delay=float(script.get("delay", 0.0)),
            trace_file=Path(script["trace_file"]) if script.get("trace_file") else None,
        )

    def _called(self, kind: str, texts: Sequence[str]) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.trace_file is not None:
            with self.trace_file.open("a", encoding="utf-8") as handle:
                handle.writelines(f"{kind}\t{json.dumps(text)}\n" for text in texts)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        self._called("loglikelihood", sorted({context for context, _ in requests}))
        scores = []
        for context, continuation in requests:
            favoured = next(
                (rule["answer"] for rule in self.choose_rules if rule["match"] in context), None
            )
            if favoured is not None:
                scores.append(-0.1 if continuation.strip() == favoured else -5.0)
            else:
                digest = hashlib.sha256(f"{self.seed}\0{context}\0{continuation}".encode()).digest()
                scores.append(-1.0 - digest[0] / 64.0)
        return scores

    def generate(
        self, user_messages: Sequence[str], max_new_tokens: int, progress: Progress | None = None
    ) -> list[str]:
        self._called("generate", user_messages)
        outputs = []
        for message in user_messages:
            rule = next((r for r in self.generate_rules if r["match"] in message), None)
            if rule:
                outputs.append(rule["output"])
            elif self.babble_words:
                outputs.append(self._babble(message))
            else:
                outputs.append(self.default_output)
        if progress is not None:
            progress(len(outputs))
        return outputs

    def _babble(self, message: str) -> str:
        words = message.split() + list(FILLER_WORDS)
        digest = hashlib.sha256(f"{self.seed}\0{message}".encode()).digest()
        rng = random.Random(digest)
        return " ".join(rng.choice(words) for _ in range(self.babble_words))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fake",
            "script": str(self.path),
            "script_sha256": sha256_file(self.path),
            "device": "none",
        }
