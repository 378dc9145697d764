"""Model loading and scoring on a tiny random Llama, checked against lm-eval's HFLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import UserError
from harness.models import FakeModel, HFModel, load_model

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
    prompt = model.chat_prompt("What is asthma?")
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is asthma?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    messages = ["What is asthma?", "What causes gout and how is it treated?", "Hi"]
    first = model.generate(messages, max_new_tokens=6)
    assert first == model.generate(messages, max_new_tokens=6)
    assert first == [model.generate([m], max_new_tokens=6)[0] for m in messages]


def _save_lora(tiny_llama: Path, folder: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.5)  # LoRA B starts at zero; make the adapter matter
    peft_model.save_pretrained(folder)


def test_adapter_changes_scores_and_loads_from_disk(tiny_llama: Path, tmp_path: Path) -> None:
    _save_lora(tiny_llama, tmp_path / "adapter")
    plain = load_model(str(tiny_llama)).loglikelihoods(REQUESTS[:2])
    adapted = load_model(str(tiny_llama), adapter=str(tmp_path / "adapter"))
    assert adapted.describe()["adapter"] == str(tmp_path / "adapter")
    assert adapted.loglikelihoods(REQUESTS[:2]) != pytest.approx(plain, abs=1e-3)


def test_fp32_lora_is_merged_with_the_outputs_of_the_unmerged_adapter(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _save_lora(tiny_llama, tmp_path / "adapter")
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
    _save_lora(tiny_llama, tmp_path / "adapter")
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
