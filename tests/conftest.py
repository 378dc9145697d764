"""Shared fixtures: small datasets in the real formats, a tiny random Llama, a fake model."""

from __future__ import annotations

import csv
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from medharness.cli import main

REAL_DATA = (
    Path(os.environ["MEDHARNESS_DATA_DIR"]) if os.environ.get("MEDHARNESS_DATA_DIR") else None
)

MEDQA_ROWS = [
    {
        "question": f"A {30 + i}-year-old presents with symptom {i}. What is the diagnosis?",
        "options": {
            "A": f"alpha {i}",
            "B": f"beta {i}",
            "C": f"gamma {i}",
            "D": f"delta {i}",
            "E": f"epsilon {i}",
        },
        "answer_idx": "ABCDE"[i % 4],
        "answer": None,
        "meta_info": "step1",
    }
    for i in range(8)
]
for row in MEDQA_ROWS:
    row["answer"] = row["options"][row["answer_idx"]]  # type: ignore[index]

QTYPES = ("information", "symptoms")
MEDQUAD_QUESTIONS = [f"What is (are) Condition {i} ?" for i in range(60)]


MMLU_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)


def mmlu_rows(subject: str) -> list[list[str]]:
    """Release-layout rows (question, A-D, gold letter): commas, quotes, a line break in a
    field, and a question with spaces around it (lm-eval strips the question only)."""
    return [
        [f"  Which structure {i} of {subject}, \"the\" one?\nPick one. ",
         f"alpha, {i}", f"beta {i}", f" gamma {i}", f"delta {i}", "ABCD"[(i + len(subject)) % 4]]
        for i in range(5)
    ]  # fmt: skip


def write_mmlu_release(folder: Path) -> None:
    folder.mkdir(parents=True)
    for subject in MMLU_SUBJECTS:
        with (folder / f"{subject}_test.csv").open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(mmlu_rows(subject))


def cais_mmlu_copy(release: Path, folder: Path, dev_rows: int = 5) -> Path:
    """MMLU as cais/mmlu holds it: a parquet file per configuration (subject) and split,
    named in the card's ``configs``; fields question, subject, choices, 0-based answer. Its
    dev split (lm-eval's few-shot source, unused at zero shot) is the first test rows."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    configs = []
    for subject in MMLU_SUBJECTS:
        with (release / f"{subject}_test.csv").open(newline="", encoding="utf-8") as f:
            rows = [
                {"question": r[0], "subject": subject, "choices": r[1:5],
                 "answer": "ABCD".index(r[5])}
                for r in csv.reader(f)
            ]  # fmt: skip
        (folder / subject).mkdir(parents=True)
        files = []
        for split, part in (("test", rows), ("dev", rows[:dev_rows])):
            path = f"{subject}/{split}-00000-of-00001.parquet"
            pq.write_table(pa.Table.from_pylist(part), folder / path)
            files.append({"split": split, "path": path})
        configs.append({"config_name": subject, "data_files": files})
    (folder / "README.md").write_text(f"---\n{json.dumps({'configs': configs})}\n---\n")
    return folder


def medquad_document(doc_id: str, pairs: list[tuple[str, str, str]]) -> str:
    body = "".join(
        f'<QAPair pid="{n}"><Question qid="{doc_id}-{n}" qtype="{qtype}">{q}</Question>'
        f"<Answer>{a}</Answer></QAPair>"
        for n, (q, a, qtype) in enumerate(pairs, start=1)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Document id="{doc_id}" source="Fixture" '
        f'url="https://example.org/{doc_id}"><Focus>Focus {doc_id}</Focus>'
        f"<QAPairs>{body}</QAPairs></Document>"
    )


def write_fixture_data(root: Path, scale: int = 1) -> Path:
    """Every dataset in its real format; ``scale`` multiplies MedQA and MedQuAD sizes."""
    medqa = root / "medqa"
    medqa.mkdir(parents=True)
    four = []
    scaled = [
        {**row, "question": row["question"] + (f" (copy {k})" if k else "")}
        for k in range(scale)
        for row in MEDQA_ROWS
    ]
    for row in scaled:
        options = {k: v for k, v in row["options"].items() if k != "E"}  # type: ignore[union-attr]
        four.append({**row, "options": options})
    dev = [{**row, "question": "(dev) " + row["question"]} for row in four]
    for name, rows in (
        ("us_4opt_test.jsonl", four),
        ("us_4opt_dev.jsonl", dev),
        ("us_5opt_test.jsonl", MEDQA_ROWS),
        ("mainland_4opt_test.jsonl", four),
        ("taiwan_test.jsonl", four),
    ):
        (medqa / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    medmcqa = root / "medmcqa"
    medmcqa.mkdir()
    (medmcqa / "dev.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "question": f"Which nerve {i}?",
                    "opa": "a",
                    "opb": "b",
                    "opc": "c",
                    "opd": "d",
                    "cop": 1 + i % 4,
                    "subject_name": "Anatomy",
                    "topic_name": None,
                    "id": f"id-{i}",
                    "choice_type": "single",
                }
            )
            + "\n"
            for i in range(6)
        ),
        encoding="utf-8",
    )

    pubmedqa = root / "pubmedqa"
    pubmedqa.mkdir()
    (pubmedqa / "test_set.json").write_text(
        json.dumps(
            {
                str(1000 + i): {
                    "QUESTION": f"Does drug {i} help?",
                    "CONTEXTS": [f"Trial {i}.", "More."],
                    "final_decision": ["yes", "no", "maybe"][i % 3],
                    "YEAR": "2001",
                }
                for i in range(6)
            }
        ),
        encoding="utf-8",
    )

    folder = root / "medquad" / "1_Fixture_QA"
    folder.mkdir(parents=True)
    questions = [f"What is (are) Condition {i} ?" for i in range(60 * scale)]
    for i, question in enumerate(questions):
        pairs = [
            (question, f"Condition {i} is a disorder.\n   It affects organ {i}.", QTYPES[i % 2]),
            (f"What causes Condition {i} ?", "", "causes"),
        ]  # an empty answer: skipped
        (folder / f"{i:07d}.xml").write_text(medquad_document(f"{i:07d}", pairs), encoding="utf-8")
    # the same question text in another folder must land in the same split
    other = root / "medquad" / "2_Other_QA"
    other.mkdir()
    (other / "0000001.xml").write_text(
        medquad_document(
            "0000001", [(MEDQUAD_QUESTIONS[0].upper(), "Another answer.", "symptoms")]
        ),
        encoding="utf-8",
    )
    write_mmlu_release(root / "mmlu_medical")
    return root


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture_data(tmp_path_factory.mktemp("data"))


@pytest.fixture
def data_env(fixture_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDHARNESS_DATA_DIR", str(fixture_data))
    return fixture_data


@pytest.fixture(scope="session")
def fake_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fake") / "fake.yaml"
    path.write_text(
        "generate:\n"
        "  - {match: 'Condition 1 ', output: 'Condition 1 is a disorder. It affects organ 1.'}\n"
        "default_output: \"Ask a doctor. <script>alert('x')</script>"
        '<img src=x onerror=alert(1)>"\n'
        "choose:\n"
        "  - {match: 'symptom 0', answer: 'A'}\n",
        encoding="utf-8",
    )
    return path


def write_fake_config(path: Path, fake_script: Path, **overrides: object) -> Path:
    """A run of two fake models on four tasks of the fixture data."""
    config = {
        "name": "demo",
        "models": [
            {"name": "base", "model": f"fake:{fake_script}"},
            {"name": "other", "model": f"fake:{fake_script}", "system_prompt": "x"},
        ],
        "tasks": ["medquad_gen", {"name": "medqa_4opt", "limit": 5}, "pubmedqa", "medmcqa"],
        "bootstrap_resamples": 200,
        **overrides,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def finished_run(data_env: Path, fake_script: Path, tmp_path: Path) -> Path:
    config = write_fake_config(tmp_path / "run.yaml", fake_script)
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    return tmp_path / "runs" / "demo"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def make_tiny_llama(path: Path, head_dim: int = 8, tied: bool = False) -> Path:
    """A random 2-layer Llama with a real byte-level tokenizer and a ChatML template.
    (vLLM's CPU attention needs a head_dim of 32 or more.) ``tied``: its output layer is its
    embeddings, as in SmolLM2."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for special in ("<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=2048,
        eos_token_id=vocab["<|im_end|>"],
        bos_token_id=vocab["<|im_start|>"],
        pad_token_id=vocab["<|im_end|>"],
        tie_word_embeddings=tied,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_lora(tiny_llama: Path, folder: Path, fill: float = 0.5) -> None:
    """A rank-4 LoRA on q/v projections whose B matrices are not zero, so it changes outputs
    (each ``fill`` another adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(fill)  # LoRA B starts at zero; make the adapter matter
    peft_model.save_pretrained(folder)


def save_ia3(tiny_llama: Path, folder: Path) -> None:
    """An IA3 adapter: a PEFT adapter that is not LoRA."""
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama),
        IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    ).save_pretrained(folder)


@pytest.fixture
def offline_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``datasets`` offline, caching in this test's folder: it reads the variable only when
    first imported, so its config is set too (a cache keyed by a copy's folder name would
    otherwise serve another test's rows)."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


@functools.cache
def lm_eval_task_manager() -> Any:
    """lm-eval's index of its own tasks (built once: it reads thousands of YAML files)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def lm_eval_mmlu_config(subject: str, copy: Path) -> dict[str, Any]:
    """lm-eval's own ``mmlu_<subject>`` config (its YAML, as its task index finds it),
    reading a local copy in cais/mmlu's layout instead of the hub: the only setting changed."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = lm_eval_task_manager()._entry(f"mmlu_{subject}")
    assert entry is not None and entry.yaml_path is not None
    return {**load_yaml(entry.yaml_path, resolve_func=True), "dataset_path": str(copy)}


def lm_eval_mmlu_task(subject: str, copy: Path) -> Any:
    """lm-eval's own ``mmlu_<subject>`` task on that copy."""
    config = lm_eval_mmlu_config(subject, copy)
    return lm_eval_task_manager().load([config])["tasks"][f"mmlu_{subject}"]
