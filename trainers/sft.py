"""Supervised fine-tuning recipes on TRL's SFTTrainer: ``lora``, ``qlora`` and ``full``.

One recipe, three ways to make the trainable model: setup (tokenizer, base model, LoRA or
4-bit LoRA or every parameter) → train (SFTTrainer, one JSONL line per logging step) →
save (PEFT adapter or full weights, the tokenizer, optional merged weights). Everything
goes to a work folder that is renamed into place when complete, so a killed training leaves
no folder that looks finished. Under ``accelerate launch`` the Trainer runs DDP (or FSDP /
DeepSpeed from the accelerate config) and only the main process writes.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import SFTTrainer

from medharness.core.errors import UserError, boundary
from medharness.core.io import append_jsonl_durable, read_jsonl, write_json_atomic
from medharness.core.weights import refuse_pickles
from medharness.trainers.data import TrainingSet, with_disclaimer
from medharness.trainers.distributed import is_main_process
from medharness.trainers.spec import DONE_FILE, TrainSpec


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
) -> bool:
    """Train per ``spec`` into ``folder`` (replaced when done); ``identity`` is saved with it.
    Returns whether this process wrote it (False on the other ranks of a distributed run)."""
    import torch
    import transformers
    from datasets import Dataset
    from trl import SFTConfig

    transformers.logging.set_verbosity_error()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_model, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(training.examples[0]["prompt"], list) and not tokenizer.chat_template:
        raise UserError(f"the tokenizer of {base_model} has no chat template to format MedQuAD")
    work = folder.with_name(f".{folder.name}.work")
    main = is_main_process()
    if main:
        shutil.rmtree(work, ignore_errors=True)  # a killed attempt starts over, same seed
        work.mkdir(parents=True)
    transformers.set_seed(spec.seed)
    model = trainable_model(spec, base_model, adapter)
    bf16, fp16 = precision_flags(spec)
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
        save_strategy="no",
        report_to=list(spec.report_to) or "none",
        dataloader_num_workers=0,
        disable_tqdm=False,  # a progress bar on long work, whatever the log level
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # also what lets a CPU launch run DDP (gloo)
    )
    log_path = work / "log.jsonl"
    trainer = LabelPositionsSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(fit_disclaimer(training, tokenizer, spec.max_seq_length)),
        processing_class=tokenizer,
        callbacks=[JsonlLog(log_path)] if main else [],
    )
    started = time.time()
    result = trainer.train()
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
    steps = list(read_jsonl(log_path)) if log_path.is_file() else []
    tokens = total_tokens(trainer)
    summary = {
        **identity,
        "data": training.description,
        "train_loss": result.training_loss,
        "first_logged_loss": steps[0]["loss"] if steps else None,
        "last_logged_loss": steps[-1]["loss"] if steps else None,
        "steps": result.global_step,
        "runtime_s": round(elapsed, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 2) if elapsed else None,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "world_size": max(1, args.world_size),
        "torch": torch.__version__,
    }
    write_json_atomic(work / DONE_FILE, summary)
    if folder.exists():
        shutil.rmtree(folder)
    work.rename(folder)
    return True


def fit_disclaimer(training: TrainingSet, tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Training examples whose appended disclaimer survives truncation to ``max_length``.

    Truncation keeps the start of a sequence, so a long answer would lose the disclaimer at
    its end and the model would never see it; such answers are shortened instead."""
    if not training.disclaimer:
        return training.examples
    suffix = with_disclaimer("", training.disclaimer)
    fitted = []
    for example in training.examples:
        answer = example["completion"][0]["content"]
        text = tokenizer.apply_chat_template(
            example["prompt"] + example["completion"], tokenize=False
        )
        overflow = len(tokenizer(text, add_special_tokens=False)["input_ids"]) - max_length
        if overflow > 0 and answer.endswith(suffix):
            body = tokenizer(answer.removesuffix(suffix), add_special_tokens=False)["input_ids"]
            keep = max(0, len(body) - overflow - 2)  # 2: re-tokenising at the cut may merge
            short = with_disclaimer(tokenizer.decode(body[:keep]).rstrip(), training.disclaimer)
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
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        return model
    if adapter:  # continue training the given adapter
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
    """SFTTrainer whose loss sends through the LM head only the positions that carry a label.

    TRL's fused LM head does this on CUDA; elsewhere it projects every position, and with
    answer-only loss on chat examples the question and system prompt are a large share of
    them. Single-process CPU training only; everything else is TRL's own path."""

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


class JsonlLog(TrainerCallback):
    """Trainer callback: one JSON line per logging step (step, epoch, loss, learning_rate,
    grad_norm, tokens_per_s), durable on disk as it is written; the report draws from it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: tuple[float, float] | None = None  # (time, tokens) at the previous line

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.path.unlink(missing_ok=True)
        self.last = (time.time(), 0.0)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= state.max_steps:
            control.should_log = True  # the last step is always in the log

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not logs or "loss" not in logs:
            return  # the end-of-training summary line goes to train_config.json instead
        now, tokens = time.time(), float(logs.get("num_tokens", 0.0))
        since, before = self.last or (now, 0.0)
        self.last = (now, tokens)
        row = {
            "step": state.global_step,
            "epoch": round(float(state.epoch or 0.0), 4),
            "loss": float(logs["loss"]),
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
            "tokens_per_s": round((tokens - before) / (now - since), 2) if now > since else None,
        }
        append_jsonl_durable(self.path, [row])
