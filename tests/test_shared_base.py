"""Fine-tunes of one base served by one loaded engine, adapters swapped in turn: the same
answers and scores as one fresh load per adapter, in fp32 (folded adapters) and bf16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_llama, save_lora

from medharness.cli import main
from medharness.models.adapters import base_weights_copy, without_adapter
from medharness.models.fake import FakeModel
from medharness.models.hf import HFModel
from medharness.models.loading import load_model, swap_adapter

REQUESTS = [
    ("Question: Which organ?\nA. heart\nB. lung\nAnswer:", " A"),
    ("Question: Which organ?\nA. heart\nB. lung\nAnswer:", " B"),
    ("The patient ", "has a fever and a cough"),
]
MESSAGES = ["What is asthma?", "What causes gout and how is it treated?"]


@pytest.fixture(scope="module")
def adapters(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("adapters")
    for name, fill in (("a", 0.5), ("b", -0.3)):
        save_lora(tiny_llama, folder / name, fill)
    return [str(folder / "a"), str(folder / "b")]


def answers(model: object) -> tuple[list[float], list[str]]:
    assert isinstance(model, HFModel)
    return model.loglikelihoods(REQUESTS), model.generate(MESSAGES, 12)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_swapped_adapters_answer_as_fresh_loads(
    tiny_llama: Path, adapters: list[str], dtype: str
) -> None:
    fresh = {
        adapter: answers(load_model(str(tiny_llama), adapter=adapter, dtype=dtype))
        for adapter in [*adapters, None]
    }
    assert len({json.dumps(found) for found in fresh.values()}) == 3  # the adapters matter
    later = [adapters[1], None]
    model = load_model(str(tiny_llama), adapter=adapters[0], dtype=dtype, later_adapters=later)
    assert isinstance(model, HFModel)
    assert (model.adapter_merged, model.base_weights is not None) == ((dtype == "float32",) * 2)
    assert answers(model) == fresh[adapters[0]]
    for adapter in [adapters[1], None, adapters[0], adapters[1]]:  # back and forth
        swapped = swap_adapter(model, adapter, allow_pickle=False)
        assert swapped is not None
        model = swapped
        assert answers(model) == fresh[adapter]  # exactly, not approximately
        assert model.describe()["adapter"] == adapter


def test_a_tied_weight_is_kept_once_and_put_back_exactly(tmp_path: Path) -> None:
    """The base's weights an engine keeps to take a folded adapter out: the embeddings the
    output layer shares are one copy, and putting the weights back keeps them shared."""
    import torch
    from transformers import AutoModelForCausalLM

    tied = make_tiny_llama(tmp_path / "tied", tied=True)
    model = AutoModelForCausalLM.from_pretrained(tied, dtype=torch.float32)
    loaded = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    kept = base_weights_copy(model)
    assert kept is not None and kept.keys() == loaded.keys()
    assert kept["lm_head.weight"] is kept["model.embed_tokens.weight"]
    with torch.no_grad():
        for parameter in model.parameters():  # as folding an adapter changes them
            parameter.add_(0.25)
    base = without_adapter(model, True, kept)
    assert base.lm_head.weight is base.model.embed_tokens.weight
    assert all(torch.equal(base.state_dict()[name], weight) for name, weight in loaded.items())


def test_an_engine_that_cannot_swap_says_so(
    tiny_llama: Path, adapters: list[str], fake_script: Path
) -> None:
    model = load_model(str(tiny_llama), adapter=adapters[0])  # not loaded to serve others
    assert isinstance(model, HFModel) and model.adapter_merged
    assert swap_adapter(model, adapters[1], allow_pickle=False) is None
    assert swap_adapter(FakeModel.from_file(fake_script), adapters[1], allow_pickle=False) is None


def write_config(tmp_path: Path, tiny_llama: Path, adapters: list[str], shared: bool) -> Path:
    config = {
        "name": "fine-tunes",
        "share_base_models": shared,
        "models": [
            {"name": "tuned-a", "model": str(tiny_llama), "adapter": adapters[0]},
            {"name": "other", "model": f"fake:{tmp_path / 'fake.yaml'}"},
            {"name": "base", "model": str(tiny_llama)},
            {"name": "tuned-b", "model": str(tiny_llama), "adapter": adapters[1]},
            {
                "name": "tuned-b-bf16",
                "model": str(tiny_llama),
                "adapter": adapters[1],
                "dtype": "bfloat16",
            },
        ],
        "tasks": [{"name": "medqa_4opt", "limit": 4}, {"name": "medquad_gen", "limit": 3}],
        "generation": {"max_new_tokens": 8},
    }
    (tmp_path / "fake.yaml").write_text("generate:\n  - {match: '', output: 'A rash.'}\n")
    path = tmp_path / f"shared-{shared}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_run_of_fine_tunes_on_one_engine_equals_one_engine_each(
    tiny_llama: Path,
    adapters: list[str],
    data_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = {}
    for shared in (True, False):
        out = tmp_path / f"runs-{shared}"
        assert main(["run", str(write_config(tmp_path, tiny_llama, adapters, shared)), "--out",
                     str(out)]) == 0  # fmt: skip
        runs[shared] = out / "fine-tunes"
        loads = [line for line in capsys.readouterr().err.splitlines() if "loading " in line]
        # one engine for the fp32 fine-tunes and the base, one for the fake model, one bf16
        assert len(loads) == (3 if shared else 5)
    logs = sorted(p.relative_to(runs[True]) for p in (runs[True] / "samples").rglob("*.jsonl"))
    assert len(logs) == 10
    for log in logs:
        assert (runs[True] / log).read_bytes() == (runs[False] / log).read_bytes()
    assert (runs[True] / "results.json").read_bytes() == (runs[False] / "results.json").read_bytes()
    models = [json.loads((runs[s] / "manifest.json").read_text())["models"] for s in runs]
    assert models[0] == models[1]  # each entry described as its own load describes it
