"""Supervised fine-tuning recipes on TRL's SFTTrainer: ``lora``, ``qlora`` and ``full``.

One recipe, three ways to make the trainable model: setup (tokenizer, base model, LoRA or
4-bit LoRA or every parameter) → train (SFTTrainer, one JSONL line per logging step) →
save (PEFT adapter or full weights, the tokenizer, optional merged weights). Everything
goes to a work folder that is renamed into place when complete, so a killed training leaves
no folder that looks finished. The work folder keeps the Trainer's checkpoints, each sealed
by a marker once every process has written its part; a re-run with the same training key
resumes from the newest sealed one (weights, optimizer, scheduler, RNG states and data
position), and a different key starts over. With a ``Validation``, the Trainer evaluates
every ``eval_steps`` (validation loss, and a task metric scored by the caller) and can keep
the best checkpoint. Under ``accelerate launch`` the Trainer runs DDP (or FSDP / DeepSpeed
from the accelerate config) and only the main process writes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import SFTTrainer

from medharness.core.distributed import from_main, is_main_process, process_count
from medharness.core.errors import UserError, boundary, first_line
from medharness.core.io import (
    append_jsonl_durable,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from medharness.core.records import TrainLogRow
from medharness.core.weights import refuse_pickles
from medharness.trainers.data import TrainingSet, with_disclaimer
from medharness.trainers.spec import DONE_FILE, VALIDATION_METRICS, TrainSpec

KEY_FILE = "training_key"  # in the work folder: which training its checkpoints belong to
SEALED = "sealed.json"  # in a checkpoint: every process finished writing it
ScoreModel = Callable[[Any, Any], float]  # (model in eval mode, tokenizer) -> the metric


@dataclass(frozen=True)
class Validation:
    """What the Trainer validates on every ``eval_steps``: examples for the loss, and
    optionally the caller's scorer of the task metric (run on the main process)."""

    examples: list[dict[str, Any]]
    score: ScoreModel | None = None


def check_runnable(spec: TrainSpec) -> None:
    """Everything that would fail late, checked before any data is read or model loaded."""
    import torch

    cuda = torch.cuda.is_available()
    if spec.recipe == "qlora":
        if not cuda:
            raise UserError(
                "recipe qlora needs a CUDA GPU (bitsandbytes 4-bit nf4) and this machine has "
                "none; use recipe: lora"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError("recipe qlora needs bitsandbytes: pip install bitsandbytes")
        if spec.merge:
            raise UserError("merge is not offered for qlora: its base weights are 4-bit")
    if spec.precision in ("fp16", "bf16") and not cuda:
        raise UserError(f"precision {spec.precision} needs a CUDA GPU; use fp32 or auto")
    if spec.packing and not cuda:
        raise UserError("packing needs flash attention (CUDA); use group_by_length on a CPU")
    sharded = os.environ.get("ACCELERATE_USE_FSDP") == "true" or (
        os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )
    if spec.eval_metric is not None and sharded:
        raise UserError(
            "eval_metric is scored on one process, and FSDP and ZeRO-3 split the weights "
            "across all of them; keep eval_steps (validation loss) or launch with DDP or ZeRO-2"
        )
    for target in spec.report_to:
        if importlib.util.find_spec(target) is None:
            raise UserError(f"report_to {target} needs the {target} package: pip install {target}")


def train(
    spec: TrainSpec,
    *,
    base_model: str,
    adapter: str | None,
    training: TrainingSet,
    folder: Path,
    identity: dict[str, Any],
    validation: Validation | None = None,
) -> bool:
    """Train per ``spec`` into ``folder`` (replaced when done); ``identity`` is saved with it
    and its ``key`` decides which checkpoints may be resumed. Returns whether this process
    wrote the folder (False on the other ranks of a distributed run)."""
    import torch
    import transformers
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig

    transformers.logging.set_verbosity_error()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_model, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(training.examples[0]["prompt"], list) and not tokenizer.chat_template:
        raise UserError(f"the tokenizer of {base_model} has no chat template to format MedQuAD")
    work = folder.with_name(f".{folder.name}.work")
    main = is_main_process()
    # a checkpoint's steps and data shards mean what they mean for one number of processes
    key = f"{identity['key']}/{process_count()}" if identity.get("key") else None
    if main:
        claim_work_folder(work, key)
    resume = last_sealed_checkpoint(work, key)
    if resume is not None and main:
        print(f"resuming from {resume.name} (step {checkpoint_step(resume)})", file=sys.stderr)
    transformers.set_seed(spec.seed)
    model = trainable_model(spec, base_model, adapter)
    if resume is not None:
        check_resumable(resume, model, spec)
    bf16, fp16 = precision_flags(spec)
    examples = fit_disclaimer(
        training.examples, training.disclaimer, tokenizer, spec.max_seq_length
    )
    planned = planned_steps(spec, len(examples), process_count())
    best_metric = f"eval_{spec.eval_metric}" if spec.best_by == "metric" else "eval_loss"
    args = SFTConfig(
        output_dir=str(work),
        num_train_epochs=spec.epochs,
        max_steps=spec.max_steps or -1,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=spec.warmup_ratio,
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum,
        max_length=spec.max_seq_length,
        packing=spec.packing,
        completion_only_loss=spec.answer_only_loss,
        train_sampling_strategy="group_by_length" if spec.group_by_length else "random",
        gradient_checkpointing=spec.gradient_checkpointing,
        neftune_noise_alpha=spec.neftune_noise_alpha,
        bf16=bf16,
        fp16=fp16,
        seed=spec.seed,
        data_seed=spec.seed,
        logging_steps=spec.logging_steps,
        save_strategy="steps",
        save_steps=spec.checkpoint_every(planned),
        save_total_limit=spec.save_total_limit,
        eval_strategy="steps" if validation else "no",
        eval_steps=spec.eval_steps,
        per_device_eval_batch_size=spec.batch_size,
        load_best_model_at_end=spec.best_by is not None,
        metric_for_best_model=best_metric if spec.best_by else None,
        greater_is_better=spec.best_by == "metric" if spec.best_by else None,
        report_to=list(spec.report_to) or "none",
        dataloader_num_workers=0,
        disable_tqdm=False,  # a progress bar on long work, whatever the log level
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # also what lets a CPU launch run DDP (gloo)
    )
    log_path = work / "log.jsonl"
    callbacks: list[TrainerCallback] = [SealCheckpoints()]
    if main:
        callbacks.append(JsonlLog(log_path, checkpoint_step(resume) if resume else None))
    if spec.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(spec.early_stopping_patience))
    held_out = None
    if validation is not None:
        held_out = Dataset.from_list(
            fit_disclaimer(validation.examples, training.disclaimer, tokenizer, spec.max_seq_length)
        )
    trainer = LabelPositionsSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        eval_dataset=held_out,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.score_model = validation.score if validation else None
    trainer.score_name = f"eval_{spec.eval_metric}"
    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    elapsed = time.time() - started
    weights = work / ("model" if spec.recipe == "full" else "adapter")
    trainer.save_model(str(weights))  # main process only, by the Trainer's own rule
    if not main:
        return False
    tokenizer.save_pretrained(weights)
    (weights / "training_args.bin").unlink(missing_ok=True)  # a pickle; train_config.json says it
    if spec.merge and spec.recipe == "lora":
        merged = trainer.model.merge_and_unload()  # type: ignore[union-attr,operator]
        merged.save_pretrained(work / "merged")
        tokenizer.save_pretrained(work / "merged")
    rows = read_jsonl(log_path) if log_path.is_file() else []
    losses = [row["loss"] for row in rows if "loss" in row]
    tokens = total_tokens(trainer)
    warmup = 0 if spec.lr_scheduler == "constant" else args.get_warmup_steps(planned)
    warnings = too_little_training(result.global_step, warmup, spec.learning_rate)
    for warning in warnings:
        print(f"medharness: warning: training {folder.name}: {warning}", file=sys.stderr)
    summary = {
        **identity,
        "data": training.description,
        "train_loss": result.training_loss,
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "steps": result.global_step,
        "runtime_s": round(elapsed, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 2) if elapsed else None,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "world_size": max(1, args.world_size),
        "launch": launch_record(trainer),
        "resumed_from_step": checkpoint_step(resume) if resume else None,
        "best": best_record(trainer, best_metric) if spec.best_by else None,
        "torch": torch.__version__,
        "warnings": warnings,
    }
    write_json_atomic(work / DONE_FILE, summary)
    if folder.exists():
        shutil.rmtree(folder)
    work.rename(folder)
    if not spec.keep_checkpoints:  # only now: until the rename they are what a resume needs
        for checkpoint in folder.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
    return True


def claim_work_folder(work: Path, key: str | None) -> None:
    """Keep the work folder of the same training (its checkpoints); start any other over."""
    if belongs_to(work, key):
        for checkpoint in work.glob("checkpoint-*"):
            if not (checkpoint / SEALED).is_file():  # a save the kill interrupted
                shutil.rmtree(checkpoint)
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if key is not None:
        (work / KEY_FILE).write_text(key, encoding="utf-8")


def last_sealed_checkpoint(work: Path, key: str | None) -> Path | None:
    """The newest checkpoint every process finished writing, if the folder is this training's.

    Every process decides from the disk alone: the main process rewrites the key only after
    it has emptied a foreign folder, so no process can see a foreign checkpoint as its own."""
    if not belongs_to(work, key):
        return None
    sealed = [c for c in work.glob("checkpoint-*") if (c / SEALED).is_file()]
    return max(sealed, key=checkpoint_step, default=None)


def belongs_to(work: Path, key: str | None) -> bool:
    """Whether the work folder holds checkpoints of the training with this key."""
    try:
        return key is not None and (work / KEY_FILE).read_text(encoding="utf-8") == key
    except OSError:
        return False


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def check_resumable(checkpoint: Path, model: Any, spec: TrainSpec) -> None:
    """A sealed checkpoint is resumed only when it is whole, of this model's shape, and holds
    no pickle that ``weights_only`` loading refuses; otherwise one line naming the file (the
    Trainer would crash on it mid-setup, or silently resume without a part it lacks)."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    hint = f"remove {checkpoint} to resume from an earlier checkpoint or start over"
    pickled = sorted(checkpoint.glob("*model*.bin"))  # weights the Trainer would unpickle
    if pickled:
        raise UserError(
            f"{pickled[0]}: pickled weights in a checkpoint; medharness resumes only from "
            f"safetensors ({hint})"
        )

    def load_state(path: Path) -> None:  # mapped, not read: an optimizer state can be large
        with safe_globals():  # what the Trainer's own loads allow (numpy's RNG state)
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    def load_weights(path: Path) -> None:
        check_weights(path, model, spec)

    weights = (
        sorted(checkpoint.glob("model*.safetensors")) or [checkpoint / "model.safetensors"]
        if spec.recipe == "full"  # one file, or the shards of a large model
        else [checkpoint / "adapter_model.safetensors"]
    )
    loads: dict[Path, Callable[[Path], None]] = {
        **{path: load_weights for path in weights},
        checkpoint / "trainer_state.json": lambda path: json.loads(path.read_text("utf-8")),
        checkpoint / "optimizer.pt": load_state,
        checkpoint / "scheduler.pt": load_state,
        **{path: load_state for path in sorted(checkpoint.glob("rng_state*.pth"))},
    }
    # DeepSpeed and FSDP keep weights and optimizer in folders of their own: there, only the
    # files present are checked (their engines read the rest)
    sharded = any(
        any(checkpoint.glob(pattern)) for pattern in ("global_step*", "*_fsdp*", "optimizer_*")
    )
    for path, load in loads.items():
        if sharded and not path.exists():
            continue
        with boundary(str(path), partial(unusable, path, hint)):
            load(path)


def unusable(path: Path, hint: str, exc: BaseException) -> str:
    """The one line of a checkpoint file a loader refused."""
    return f"{path}: {first_line(exc)}; {hint}"


def check_weights(path: Path, model: Any, spec: TrainSpec) -> None:
    """A checkpoint's weights file whole (safetensors checks its length against its header),
    with the names and shapes of ``model``'s trained weights: another model's adapter, or
    another LoRA rank, is refused."""
    from peft import get_peft_model_state_dict
    from safetensors import safe_open

    state = model.state_dict() if spec.recipe == "full" else get_peft_model_state_dict(model)
    expected = {name: tuple(tensor.shape) for name, tensor in state.items()}
    with safe_open(str(path), framework="pt") as saved:
        found = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}  # noqa: SIM118
    strange = sorted(n for n in found if expected.get(n) != found[n])
    lacking = [] if spec.recipe == "full" else sorted(set(expected) - set(found))
    if strange or lacking:
        name = (strange or lacking)[0]
        raise ValueError(
            f"weights of another shape: {name} is {found.get(name, 'absent')}, this training's "
            f"is {expected.get(name, 'absent')}"
        )


HANDFUL_OF_STEPS = 10  # fewer optimiser steps at a non-zero learning rate barely move a model


def too_little_training(steps: int, warmup: int, learning_rate: float) -> list[str]:
    """Why a finished training may have left its model almost as it was. ``warmup``: the
    schedule's warm-up steps (0 for ``constant``, which has none). Every shipped schedule
    runs its first step at learning rate 0 when it warms up, and no other step at 0."""
    warnings = []
    if steps < warmup:
        warnings.append(
            f"{steps} optimiser steps, fewer than its {warmup} warm-up steps: the learning "
            f"rate never reached {learning_rate:g}"
        )
    moving = steps - (1 if warmup else 0)
    if moving < HANDFUL_OF_STEPS:
        warnings.append(
            f"only {moving} optimiser step{'s' if moving != 1 else ''} at a non-zero learning "
            "rate: the tuned model is hardly different from its base (more examples, epochs "
            "or max_steps)"
        )
    return warnings


def planned_steps(spec: TrainSpec, examples: int, processes: int) -> int:
    """Optimiser steps the training will take, as the Trainer counts them."""
    if spec.max_steps is not None:
        return spec.max_steps
    batches = math.ceil(examples / (spec.batch_size * max(1, processes)))
    return max(1, math.ceil(math.ceil(batches / spec.grad_accum) * spec.epochs))


def launch_record(trainer: Any) -> dict[str, Any]:
    """How the training was spread: accelerate's distributed type and process count, and the
    settings ``accelerate launch`` passed from its config file (FSDP, DeepSpeed, precision)."""
    state = trainer.accelerator.state
    return {
        "distributed_type": str(state.distributed_type.value),
        "processes": int(state.num_processes),
        "accelerate_settings": {
            name: value
            for name, value in sorted(os.environ.items())
            if name.startswith(("ACCELERATE_", "FSDP_")) and "TOKEN" not in name
        },
    }


def best_record(trainer: Any, metric: str) -> dict[str, Any]:
    """The checkpoint kept as the training's result, and why."""
    return {
        "step": trainer.state.best_global_step,
        "metric": metric,
        "value": trainer.state.best_metric,
    }


def fit_disclaimer(
    examples: list[dict[str, Any]], disclaimer: str | None, tokenizer: Any, max_length: int
) -> list[dict[str, Any]]:
    """Examples whose appended disclaimer survives truncation to ``max_length``.

    Truncation keeps the start of a sequence, so a long answer would lose the disclaimer at
    its end and the model would never see it; such answers are shortened instead."""
    if not disclaimer:
        return examples
    suffix = with_disclaimer("", disclaimer)
    fitted = []
    for example in examples:
        answer = example["completion"][0]["content"]
        text = tokenizer.apply_chat_template(
            example["prompt"] + example["completion"], tokenize=False
        )
        overflow = len(tokenizer(text, add_special_tokens=False)["input_ids"]) - max_length
        if overflow > 0 and answer.endswith(suffix):
            body = tokenizer(answer.removesuffix(suffix), add_special_tokens=False)["input_ids"]
            keep = max(0, len(body) - overflow - 2)  # 2: re-tokenising at the cut may merge
            short = with_disclaimer(tokenizer.decode(body[:keep]).rstrip(), disclaimer)
            example = {**example, "completion": [{"role": "assistant", "content": short}]}
        fitted.append(example)
    return fitted


def trainable_model(spec: TrainSpec, base_model: str, adapter: str | None) -> Any:
    """The base model with what this recipe trains: LoRA, LoRA on 4-bit, or everything."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    load: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    if spec.recipe == "qlora":
        from transformers import BitsAndBytesConfig

        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        load["dtype"] = torch.bfloat16
    else:
        load["dtype"] = torch.float32  # master weights; bf16/fp16 run under autocast
    if adapter:  # training loads safetensors only, base weights and adapters alike
        refuse_pickles(Path(adapter).expanduser(), "adapter", allow_pickle=False)
    with boundary(f"could not load {base_model!r} for training"):
        model = AutoModelForCausalLM.from_pretrained(base_model, **load)
    if spec.recipe == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec.gradient_checkpointing
        )
    if spec.recipe == "full":
        if adapter:  # train on top of the adapter: fold it in, then train every weight
            with boundary(f"could not load the adapter {adapter} for training"):
                model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        return model
    if adapter:  # continue training the given adapter
        with boundary(f"could not load the adapter {adapter} for training"):
            return PeftModel.from_pretrained(model, adapter, is_trainable=True)
    lora = spec.lora
    return get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        ),
    )


def precision_flags(spec: TrainSpec) -> tuple[bool, bool]:
    import torch

    precision = spec.precision
    if precision == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        precision = "bf16" if cuda_bf16 or spec.recipe == "qlora" else "fp32"
    return precision == "bf16", precision == "fp16"


def total_tokens(trainer: Any) -> int:
    """Non-padding tokens trained on, as TRL counts them across processes."""
    return int(getattr(trainer, "_total_train_tokens", 0))


class LabelPositionsSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss sends through the LM head only the positions that carry a label,
    and whose evaluations add the caller's task metric to the validation loss.

    TRL's fused LM head does this on CUDA; elsewhere it projects every position, and with
    answer-only loss on chat examples the question and system prompt are a large share of
    them. Single-process CPU training only; everything else is TRL's own path."""

    score_model: ScoreModel | None = None
    score_name: str = ""
    _task_score: dict[str, float] | None = None

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """The validation loss and, with a scorer, its metric, scored on the main process
        and shared so every process takes the same best-checkpoint and stopping decisions."""
        if self.score_model is None:
            return super().evaluate(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        value = 0.0
        if is_main_process():
            model.eval()
            value = self.score_model(model, self.processing_class)
            model.train()
        self._task_score = {self.score_name: from_main(value)}
        try:
            metrics: dict[str, float] = super().evaluate(*args, **kwargs)
        finally:
            score, self._task_score = self._task_score, None
        return {**metrics, **score}

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length-grouped batches in an order fixed by the data seed and the epoch.

        transformers' sampler draws its order from the global RNG when an epoch starts; a
        resumed training restores that RNG only after its epoch has begun, so it would see
        another order than the killed one saw. (Random batches are already seeded this
        way by accelerate.)"""
        sampler = super()._get_train_sampler(train_dataset)
        if self.args.train_sampling_strategy != "group_by_length" or sampler is None:
            return sampler
        seed = self.args.data_seed or self.args.seed
        return EpochSeededLengthSampler(sampler, seed, lambda: self.state.epoch or 0.0)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """None: TRL writes one beside every checkpoint, naming the work folder as the model;
        train_config.json and the run's report describe the training instead."""

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The task metric joins the evaluation's own log line (loss, runtime)."""
        if self._task_score is not None and "eval_loss" in logs:
            logs = {**logs, **self._task_score}
        super().log(logs, *args, **kwargs)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        import torch
        import torch.nn.functional as F

        if (
            return_outputs
            or not model.training
            or torch.cuda.is_available()
            or self.args.world_size > 1
            or "labels" not in inputs
            or "attention_mask" not in inputs
        ):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        hidden = causal.base_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        ).last_hidden_state
        labels = inputs["labels"][:, 1:]
        scored = labels != -100
        logits = causal.get_output_embeddings()(hidden[:, :-1][scored]).float()
        targets = labels[scored]
        count = num_items_in_batch if num_items_in_batch is not None else scored.sum()
        loss = F.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(count).clamp(
            min=1
        )
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == targets).sum().item()
        metrics = self._metrics["train"]
        metrics["mean_token_accuracy"].append(correct / max(1, int(targets.numel())))
        self._total_train_tokens += int(inputs["attention_mask"].sum().item())
        metrics["num_tokens"] = [self._total_train_tokens]
        return loss


class EpochSeededLengthSampler:
    """transformers' length-grouped order, drawn from a generator seeded by seed + epoch.

    The epoch is read from the Trainer's state when an epoch's iteration starts (whole at
    an epoch's start, the checkpoint's when resuming mid-epoch): ``set_epoch`` does not
    reach a sampler behind accelerate's skipping and sharding wrappers."""

    def __init__(self, grouped: Any, seed: int, epoch: Callable[[], float]) -> None:
        self.grouped = grouped
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.grouped)

    def __iter__(self) -> Any:
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + math.floor(self.epoch()))
        order = get_length_grouped_indices(
            self.grouped.lengths, self.grouped.batch_size, generator=generator
        )
        return iter(order)


class SealCheckpoints(TrainerCallback):
    """Mark a checkpoint complete once every process has written its part (the main process
    the weights, optimizer and state; each process its RNG state). A kill during a save
    leaves an unsealed checkpoint, which a resume ignores and removes."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if is_main_process():
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_json_atomic(checkpoint / SEALED, {"step": state.global_step})


class JsonlLog(TrainerCallback):
    """Trainer callback: one JSON line per logging step (step, epoch, loss, learning_rate,
    grad_norm, tokens_per_s) and per evaluation (validation loss and metric), durable on disk
    as it is written; the report draws from it. A resumed training keeps the lines up to its
    checkpoint and marks the step it resumed from."""

    def __init__(self, path: Path, resumed_step: int | None = None) -> None:
        self.path = path
        self.resumed_step = resumed_step
        self.last: tuple[float, float] | None = None  # (time, tokens) at the previous line

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = (time.time(), 0.0)
        if self.resumed_step is None:
            self.path.unlink(missing_ok=True)
            return
        earlier = read_jsonl(self.path) if self.path.is_file() else []
        kept = [row for row in earlier if row["step"] <= self.resumed_step]
        resumed = TrainLogRow(step=self.resumed_step, resumed=True)
        write_jsonl_atomic(self.path, [*kept, log_line(resumed)])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= state.max_steps:
            control.should_log = True  # the last step is always in the log

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if logs and "eval_loss" in logs:
            row = TrainLogRow(
                step=state.global_step,
                epoch=round(float(state.epoch or 0.0), 4),
                validation={
                    name.removeprefix("eval_"): float(value)
                    for name, value in logs.items()
                    if name == "eval_loss" or name.removeprefix("eval_") in VALIDATION_METRICS
                },
            )
        elif logs and "loss" in logs:
            now, tokens = time.time(), float(logs.get("num_tokens", 0.0))
            since, before = self.last or (now, 0.0)
            self.last = (now, tokens)
            grad_norm = logs.get("grad_norm")
            row = TrainLogRow(
                step=state.global_step,
                epoch=round(float(state.epoch or 0.0), 4),
                loss=float(logs["loss"]),
                learning_rate=logs.get("learning_rate"),
                grad_norm=float(grad_norm) if grad_norm is not None else None,
                tokens_per_s=round((tokens - before) / (now - since), 2) if now > since else None,
            )
        else:
            return  # the end-of-training summary line goes to train_config.json instead
        append_jsonl_durable(self.path, [log_line(row)])


def log_line(row: TrainLogRow) -> dict[str, Any]:
    return row.model_dump(mode="json", exclude_defaults=True)
