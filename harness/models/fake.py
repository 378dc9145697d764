"""A scripted model that makes every CLI path testable offline."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medharness.core.errors import UserError
from medharness.core.io import sha256_file
from medharness.core.validation import Strict, load_yaml_file, validate_file_data
from medharness.models.base import Completion, Progress, Prompt, Sampling
from medharness.models.loading import LoadRequest
from medharness.models.prompts import prompt_text

FILLER_WORDS = ("the", "a", "is", "of", "and", "to", "in", "may", "include", "patients")


class GenerateRule(Strict):
    match: str
    output: str
    quote_message: bool = False  # repeat the message before `output`, as small models do
    # sampled decoding: one of these, drawn with the answer's seed, in place of `output`
    sampled: list[str] = Field(default_factory=list)


class ChooseRule(Strict):
    match: str
    answer: str


class Hold(Strict):
    """Tests that kill a run mid-work: each process answers ``after`` calls at once, then
    marks every further call as held (a file ``<until>.held.<pid>``) and waits for ``until``
    to exist, so a test kills while work is provably in flight instead of racing a delay."""

    after: int = Field(ge=0)
    until: str
    kind: Literal["generate", "loglikelihood"] | None = None  # count and hold only these
    timeout_s: float = Field(600.0, gt=0, le=3600.0)


class FakeScript(Strict):
    """A fake model's script, validated like every other file a user writes."""

    generate: list[GenerateRule] = Field(default_factory=list)
    default_output: str = ""
    choose: list[ChooseRule] = Field(default_factory=list)
    babble_words: int = Field(0, ge=0, le=100_000)
    seed: int = 0
    delay: float = Field(0.0, ge=0.0, le=3600.0)
    trace_file: str | None = None
    hold: Hold | None = None
    cut_at_budget: bool = False  # words are tokens: answers stop at max_new_tokens of them


@dataclass
class FakeModel:
    """Answers from a script; unmatched requests get deterministic pseudo-random scores.

    Script (YAML or JSON)::

        generate:                      # first rule whose `match` is in the message wins
          - {match: "glaucoma", output: "Glaucoma is an eye disease."}
          - {match: "grade", output: "correctness: 4", quote_message: true}  # echo, then this
          - {match: "angina", output: "A", sampled: ["A", "B"]}  # sampled: drawn by seed
        default_output: "I am not sure."
        choose:                        # favour a continuation when `match` is in the context
          - {match: "orthopaedic", answer: "B"}
        babble_words: 80               # instead of default_output: that many pseudo-random
        seed: 0                        # words drawn from the message (differs per seed, and
                                       # per answer seed when sampled)
        delay: 0.0                     # seconds per call, to stand in for a slow model
        trace_file: calls.log          # one line per request as it arrives (tests of resuming)
        hold: {after: 1, until: go}    # then each call waits for the file go (tests of kills)
        cut_at_budget: true            # each word a token: an answer longer than the budget
                                       # is cut there, as a model stopped at max_new_tokens
    """

    path: Path
    script: FakeScript
    chunk_size: int = 16
    calls: int = 0

    @classmethod
    def from_file(cls, path: Path) -> FakeModel:
        if not path.is_file():
            raise UserError(f"fake model script not found: {path}")
        data = load_yaml_file(path, "fake model script")
        script = validate_file_data(FakeScript, data or {}, str(path), "fake model settings")
        for key, file in (
            ("trace_file", script.trace_file),
            ("hold.until", script.hold.until if script.hold else None),
        ):
            if file is not None and not Path(file).parent.is_dir():
                raise UserError(f"{path}: {key}: the folder of {file} does not exist")
        return cls(path=path, script=script)

    def _called(self, kind: str, texts: Sequence[str]) -> None:
        """Trace a call as it arrives (one killed during its delay or hold was still asked),
        then take the delay and the hold."""
        if self.script.trace_file is not None:
            with Path(self.script.trace_file).open("a", encoding="utf-8") as handle:
                handle.writelines(f"{kind}\t{json.dumps(text)}\n" for text in texts)
        if self.script.delay:
            time.sleep(self.script.delay)
        hold = self.script.hold
        if hold is None or hold.kind not in (None, kind):
            return
        self.calls += 1
        if self.calls > hold.after:
            release = Path(hold.until)
            Path(f"{release}.held.{os.getpid()}").touch()
            deadline = time.monotonic() + hold.timeout_s
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.02)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        self._called("loglikelihood", sorted({context for context, _ in requests}))
        scores = []
        for context, continuation in requests:
            favoured = next(
                (rule.answer for rule in self.script.choose if rule.match in context), None
            )
            if favoured is not None:
                scores.append(-0.1 if continuation.strip() == favoured else -5.0)
            else:
                seeded = f"{self.script.seed}\0{context}\0{continuation}"
                digest = hashlib.sha256(seeded.encode()).digest()
                scores.append(-1.0 - digest[0] / 64.0)
        return scores

    def generate(
        self, user_messages: Sequence[Prompt], max_new_tokens: int, progress: Progress | None = None
    ) -> list[str]:
        return [c.text for c in self.complete(user_messages, max_new_tokens, progress)]

    def complete(
        self,
        user_messages: Sequence[Prompt],
        max_new_tokens: int,
        progress: Progress | None = None,
        sampling: Sampling | None = None,
    ) -> list[Completion]:
        texts = [prompt_text(message) for message in user_messages]
        self._called("generate", texts)
        seeds = sampling.seeds if sampling else (None,) * len(texts)
        outputs = [
            self._budgeted(self._output(text, seed), max_new_tokens)
            for text, seed in zip(texts, seeds, strict=True)
        ]
        if progress is not None:
            progress(len(outputs))
        return outputs

    def _output(self, message: str, seed: int | None) -> str:
        """The scripted answer; under sampling (``seed`` given) a rule's draw from its
        ``sampled`` outputs, or babble that differs per seed."""
        rule = next((r for r in self.script.generate if r.match in message), None)
        if rule:
            output = rule.output
            if seed is not None and rule.sampled:
                output = random.Random(seed).choice(rule.sampled)
            return (message + "\n" if rule.quote_message else "") + output
        if self.script.babble_words:
            return self._babble(message, seed)
        return self.script.default_output

    def _budgeted(self, output: str, max_new_tokens: int) -> Completion:
        words = re.findall(r"\S+\s*", output)
        if not self.script.cut_at_budget or len(words) <= max_new_tokens:
            return Completion(output, hit_limit=False, tokens=len(words))
        cut = "".join(words[:max_new_tokens]).rstrip()
        return Completion(cut, hit_limit=True, tokens=max_new_tokens)

    def count_tokens(self, text: str) -> int:
        return len(re.findall(r"\S+\s*", text))

    def _babble(self, message: str, seed: int | None) -> str:
        words = message.split() + list(FILLER_WORDS)
        drawn = "" if seed is None else f"\0{seed}"  # greedy babble as it always was
        digest = hashlib.sha256(f"{self.script.seed}\0{message}{drawn}".encode()).digest()
        rng = random.Random(digest)
        return " ".join(rng.choice(words) for _ in range(self.script.babble_words))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fake",
            "script": str(self.path),
            "script_sha256": sha256_file(self.path),
            "device": "none",
        }


def load(request: LoadRequest) -> FakeModel:
    """The fake backend's loader (declared in models/backends/fake.py): ``fake:SCRIPT``."""
    if request.adapter:
        raise UserError("a fake model cannot take an adapter")
    return FakeModel.from_file(Path(request.source).expanduser())
