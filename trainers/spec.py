"""The ``train:`` block of a model entry: what to train, on what, and how.

Defaults are the ones that train SmolLM2-135M sensibly on a CPU; every knob a model card on
MedQuAD or MedQA reports (rank, alpha, target modules, learning rate and schedule, batch and
accumulation, epochs, precision, NEFTune, disclaimers) has a key here.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from medharness.core.validation import Strict

Recipe = Literal["lora", "qlora", "full"]
TrainData = Literal["medquad", "medqa_dev", "medqa_train"]
SweepMetric = Literal["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
# scored on a validation slice during training: ROUGE/BLEU on MedQuAD, acc on MedQA dev
ValidationMetric = Literal["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "acc"]
VALIDATION_METRICS = get_args(ValidationMetric)
CHECKPOINTS_PER_RUN = 10  # save_steps when unset: about this many checkpoints in a training
DONE_FILE = "train_config.json"  # the resolved config, written last: a finished training


class LoraSettings(Strict):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # "all-linear" (PEFT's shorthand: every linear layer but the output head) or module names
    target_modules: Literal["all-linear"] | list[str] = "all-linear"


class SweepSpec(Strict):
    """Points to try; each is trained, scored on the validation split, the best one kept."""

    grid: dict[str, list[float | int]] | None = None  # every combination of the lists
    points: list[dict[str, float | int]] | None = None  # or exactly these combinations
    metric: SweepMetric = "rouge1"  # higher is better
    validation_limit: int = Field(64, ge=1)  # validation questions scored per point

    @model_validator(mode="after")
    def one_form(self) -> SweepSpec:
        if (self.grid is None) == (self.points is None):
            raise ValueError("give either grid or points")
        for key in {k for point in self.combinations() for k in point}:
            if key not in SWEEPABLE:
                raise ValueError(f"cannot sweep {key!r}; sweepable: {', '.join(SWEEPABLE)}")
        if not self.combinations():
            raise ValueError("the sweep has no points")
        return self

    def combinations(self) -> list[dict[str, float | int]]:
        if self.points is not None:
            return [dict(point) for point in self.points]
        assert self.grid is not None
        keys = list(self.grid)
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(self.grid[key] for key in keys))
        ]


class TrainSpec(Strict):
    recipe: Recipe = "lora"  # lora | qlora (4-bit nf4, CUDA only) | full (every parameter)
    # medquad: train split; medqa_dev: MedQA US 4-option dev; medqa_train: its train split
    # (medqa/us_4opt_train.jsonl in the data root, or the hub copy named by source)
    data: TrainData = "medquad"
    source: str | None = None  # medqa_train from a hub copy: hub | hub:ORG/NAME@REV | folder
    limit: int | None = Field(None, ge=1)  # first N training examples (seeded stable order)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(4, ge=1)  # per device
    grad_accum: int = Field(1, ge=1)
    max_seq_length: int = Field(512, ge=16)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, else fp32
    seed: int = 42
    neftune_noise_alpha: float | None = Field(None, gt=0)  # NEFTune embedding noise
    packing: bool = False  # pack examples into max_seq_length blocks (flash attention only)
    group_by_length: bool = True  # batch similar lengths together: less padding, same loss
    gradient_checkpointing: bool = False  # trade compute for memory on large models
    answer_only_loss: bool = True  # loss on the answer tokens, not on the question
    disclaimer: str | None = None  # appended to every training answer (MedQuAD only)
    lora: LoraSettings = LoraSettings()
    merge: bool = False  # also save base + adapter merged into plain weights
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)  # + the log
    logging_steps: int = Field(5, ge=1)
    # Checkpoints: a killed training re-run with the same command resumes from the last one.
    save_steps: int | None = Field(None, ge=1)  # unset: ~10 per training (eval_steps if best_by)
    save_total_limit: int = Field(2, ge=2)  # newest kept (+ the best); 2+: one complete remains
    keep_checkpoints: bool = False  # leave them in the training folder when it finishes
    # Evaluation during training, on the validation split (MedQuAD) or the dev file (MedQA).
    eval_steps: int | None = Field(None, ge=1)  # validation every N optimiser steps
    eval_limit: int = Field(64, ge=1)  # validation examples (loss) and questions (metric)
    eval_metric: ValidationMetric | None = None  # a task metric besides the validation loss
    best_by: Literal["loss", "metric"] | None = None  # keep the best checkpoint, not the last
    early_stopping_patience: int | None = Field(None, ge=1)  # evaluations without improvement
    sweep: SweepSpec | None = None

    @model_validator(mode="after")
    def coherent(self) -> TrainSpec:
        if (
            self.recipe == "full"
            and self.sweep
            and any("lora_r" in point for point in self.sweep.combinations())
        ):
            raise ValueError("a full fine-tune has no LoRA rank to sweep")
        if self.disclaimer is not None and self.data != "medquad":
            raise ValueError("disclaimer applies to MedQuAD answers only")
        if self.source is not None and self.data != "medqa_train":
            raise ValueError("source applies to data: medqa_train")
        if self.sweep and self.data != "medquad":
            raise ValueError("sweeps score on the MedQuAD validation split; use data: medquad")
        self.check_validation()
        return self

    def check_validation(self) -> None:
        if self.eval_steps is None:
            named = [
                k
                for k in ("eval_metric", "best_by", "early_stopping_patience")
                if getattr(self, k) is not None
            ]
            if named:
                raise ValueError(f"{named[0]} needs eval_steps (how often to validate)")
            return
        if self.data == "medqa_dev":
            raise ValueError(
                "data: medqa_dev trains on the dev split, so nothing is left to "
                "validate on; use medqa_train (validated on dev) or medquad"
            )
        if self.data == "medqa_train" and self.source is not None:
            raise ValueError(
                "validation reads the data root's MedQA dev file; "
                "a hub-sourced medqa_train has none"
            )
        generative = self.data == "medquad"
        if self.eval_metric is not None and (self.eval_metric == "acc") == generative:
            kind = "ROUGE or BLEU" if generative else "acc"
            raise ValueError(f"eval_metric for data: {self.data} is {kind}")
        if self.best_by == "metric" and self.eval_metric is None:
            raise ValueError("best_by: metric needs eval_metric")
        if self.early_stopping_patience is not None and self.best_by is None:
            raise ValueError("early_stopping_patience needs best_by (what must improve)")
        if self.best_by and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError("with best_by, save_steps must be a multiple of eval_steps")

    def checkpoint_every(self, planned_steps: int) -> int:
        """Optimiser steps between checkpoints: the setting, or about ten per training."""
        if self.save_steps is not None:
            return self.save_steps
        if self.best_by is not None and self.eval_steps is not None:
            return self.eval_steps  # every evaluated step can become the best
        return max(1, round(planned_steps / CHECKPOINTS_PER_RUN))

    def with_point(self, point: dict[str, Any]) -> TrainSpec:
        """This spec with one sweep point's values in place, and no sweep."""
        updates: dict[str, Any] = {"sweep": None}
        lora = self.lora.model_dump()
        for key, value in point.items():
            if key.startswith("lora_"):
                lora[key.removeprefix("lora_")] = value
            else:
                updates[key] = value
        updates["lora"] = LoraSettings.model_validate(lora)
        return TrainSpec.model_validate({**self.model_dump(), **updates})


SWEEPABLE = (
    "learning_rate",
    "epochs",
    "max_steps",
    "warmup_ratio",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "neftune_noise_alpha",
)
