"""Every bad input of docs/errors.md: one line on stderr, exit 2, no run directory."""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_custom_tasks import CUSTOM_CASES
from test_endpoint import ENDPOINT_CASES
from test_gate import BAD_POLICIES
from test_healthbench import HEALTHBENCH_CASES
from test_hostile import DOCUMENTED as HOSTILE_CASES
from test_hub_sources import SOURCE_CASES
from test_judging import JUDGING_CASES
from test_lm_eval_interop import INTEROP_CASES
from test_medcalc import MEDCALC_CASES
from test_publish import PUBLISH_CASES
from test_ray_executor import RAY_CASES
from test_records import RECORD_CASES
from test_repeats import REPEATS_CASES

from medharness.cli import main

ROOT = Path(__file__).resolve().parent.parent


class Case:
    """A prepared command line for one bad input."""

    def __init__(self, tmp: Path, data: Path, fake: Path, tiny: Path) -> None:
        self.tmp, self.data, self.fake, self.tiny = tmp, data, fake, tiny
        self.config: dict = {
            "name": "demo",
            "data_dir": str(data),
            "models": [{"name": "base", "model": f"fake:{fake}"}],
            "tasks": ["medquad_gen", "medqa_4opt"],
        }
        self.out = tmp / "runs"
        self.raw_config: str | None = None

    def copy_data(self) -> Path:
        copy = self.tmp / "data"
        shutil.copytree(self.data, copy)
        self.config["data_dir"] = str(copy)
        return copy

    def argv(self) -> list[str]:
        path = self.tmp / "run.yaml"
        path.write_text(self.raw_config or yaml.safe_dump(self.config), encoding="utf-8")
        return ["run", str(path), "--out", str(self.out)]


def _set(**changes: object) -> Callable[[Case], None]:
    return lambda case: case.config.update(changes)


def _raw(text: str) -> Callable[[Case], None]:
    def apply(case: Case) -> None:
        case.raw_config = text

    return apply


def _corrupt_line(case: Case) -> None:
    with (case.copy_data() / "medqa/us_4opt_test.jsonl").open("a") as handle:
        handle.write('{"question": "cut off\n')


def _not_utf8(case: Case) -> None:
    with (case.copy_data() / "medqa/us_4opt_test.jsonl").open("ab") as handle:
        handle.write(b'{"question": "\xff\xfe"}\n')


def _checksum(case: Case) -> None:
    data = case.copy_data()
    (data / "medqa/SHA256SUMS").write_text("0" * 64 + "  us_4opt_test.jsonl\n")


def _medquad_checksum(case: Case) -> None:
    import hashlib

    data = case.copy_data()
    files = sorted((data / "medquad").glob("*/*.xml"))
    (data / "medquad/SHA256SUMS").write_text(
        "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.parent.name}/{p.name}\n"
            for p in files
        )
    )
    files[3].write_text(files[3].read_text().replace("disorder", "disease"))


def _mmlu_bad_row(case: Case) -> None:
    path = case.copy_data() / "mmlu_medical/anatomy_test.csv"
    path.write_text("Which bone?,a,b,c,d,A\nWhich nerve?,a,b,c,d\n", encoding="utf-8")
    case.config["tasks"] = ["mmlu_anatomy"]


def _suite_data_missing(case: Case) -> None:
    shutil.rmtree(case.copy_data() / "mmlu_medical")
    case.config["tasks"] = ["multimedqa"]


def _empty_split(case: Case) -> None:
    (case.copy_data() / "medqa/us_4opt_test.jsonl").write_text("")


def _missing_data(case: Case) -> None:
    case.config["data_dir"] = str(case.tmp / "nowhere")


def _adapter_other_base(case: Case) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=300,
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
        )
    )
    adapter = get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"]))
    adapter.save_pretrained(case.tmp / "adapter")
    case.config["models"] = [
        {"name": "tuned", "model": str(case.tiny), "adapter": str(case.tmp / "adapter")}
    ]


def _no_chat_template(case: Case) -> None:
    plain = case.tmp / "plain-model"
    shutil.copytree(case.tiny, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    settings = json.loads((plain / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(settings))
    case.config["models"] = [{"name": "plain", "model": str(plain)}]
    case.config["tasks"] = ["medquad_gen"]


def _vllm_missing(case: Case) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this environment")
    case.config["models"] = [{"name": "v", "model": str(case.tiny), "backend": "vllm"}]


def _pickle_weights(case: Case) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    pickled = case.tmp / "pickled"
    shutil.copytree(case.tiny, pickled)
    model = AutoModelForCausalLM.from_pretrained(case.tiny)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    case.config["models"] = [{"name": "pickled", "model": str(pickled)}]


def _unwritable_out(case: Case) -> None:
    (case.tmp / "a-file").write_text("not a folder")
    case.out = case.tmp / "a-file" / "runs"


def _qlora(case: Case) -> None:
    case.config["models"] = [{"name": "q", "model": str(case.tiny), "train": {"recipe": "qlora"}}]


def _reasoning_scored_by_likelihood(case: Case) -> None:
    case.config["models"][0]["reasoning"] = {"think_start": "<think>", "think_end": "</think>"}


# id -> (what to break, the words the one-line error must contain)
CASES: dict[str, tuple[Callable[[Case], None], str]] = {
    "malformed-yaml": (_raw("name: [unclosed\n"), "malformed YAML"),
    "unknown-key": (_set(colour="red"), "colour: unknown key"),
    "wrong-type": (_set(seed="twelve"), "seed: Input should be a valid integer"),
    "bad-value": (_set(bootstrap_resamples=5), "bootstrap_resamples: Input should be greater"),
    "unknown-task": (_set(tasks=["medqa_9opt"]), "unknown task or suite 'medqa_9opt'"),
    "unknown-suite": (_set(tasks=["multimedqa2"]), "unknown task or suite 'multimedqa2'"),
    "suite-member-not-a-task": (
        _set(tasks=["medqa_4opt"], suites={"mine": ["medqa_4opt", "medqa_5opt"]}),
        "suites: mine: 'medqa_5opt' is not a task of this run",
    ),
    "suite-data-missing": (
        _suite_data_missing,
        "suite multimedqa needs mmlu_anatomy: data for mmlu_anatomy not found",
    ),
    "missing-data": (_missing_data, "data for medquad_gen not found"),
    "not-utf8-data": (_not_utf8, "us_4opt_test.jsonl:9: not UTF-8 text"),
    "checksum-mismatch": (_checksum, "differs from 000000000000... in"),
    "medquad-checksum-mismatch": (_medquad_checksum, "1_Fixture_QA: files differ from"),
    "corrupt-jsonl-line": (_corrupt_line, "us_4opt_test.jsonl:9: not valid JSON"),
    "mmlu-bad-row": (_mmlu_bad_row, "anatomy_test.csv:row 2: expected 6 columns"),
    "empty-split": (_empty_split, "task medqa_4opt: no samples to evaluate"),
    "missing-model-path": (
        _set(models=[{"name": "a", "model": "./no/such/model"}]),
        "model path does not exist",
    ),
    "missing-fake-script": (
        _set(models=[{"name": "a", "model": "fake:/no/such.yaml"}]),
        "fake model script not found",
    ),
    "adapter-for-other-base": (_adapter_other_base, "does not fit this model"),
    "no-chat-template": (_no_chat_template, "has no chat template"),
    "pickle-weights": (_pickle_weights, "only safetensors weights load unless allow_pickle"),
    "vllm-not-installed": (_vllm_missing, "backend vllm needs the vllm package"),
    "output-not-writable": (_unwritable_out, "cannot write the run directory"),
    "unsafe-run-name": (_set(name="../escape"), "name: String should match pattern"),
    "qlora-without-cuda": (_qlora, "recipe qlora needs a CUDA GPU"),
    "reasoning-without-generation": (
        _reasoning_scored_by_likelihood,
        "models.0: reasoning: needs multiple_choice: cot or generate",
    ),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_is_one_line_and_exit_2(
    case_id: str,
    fixture_data: Path,
    fake_script: Path,
    tiny_llama: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = Case(tmp_path, fixture_data, fake_script, tiny_llama)
    breaker, message = CASES[case_id]
    breaker(case)
    code = main(case.argv())
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "it/s]" not in line and line.strip()]
    assert code == 2, err
    assert lines[-1].startswith("medharness: error:") and message in lines[-1], err
    assert sum(line.startswith("medharness: error:") for line in lines) == 1
    assert not (case.out / "demo").exists()
    assert not case.out.exists() or not [p for p in case.out.iterdir() if p.name != ".demo"]


def test_pickled_weights_load_when_allowed(
    fixture_data: Path, fake_script: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    case = Case(tmp_path, fixture_data, fake_script, tiny_llama)
    _pickle_weights(case)
    case.config["models"][0]["allow_pickle"] = True
    case.config["tasks"] = ["medqa_4opt"]
    assert main(case.argv()) == 0


def test_disk_full_is_one_line_and_exit_2(
    fixture_data: Path,
    fake_script: Path,
    tiny_llama: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import medharness.run.runner

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "results.json")

    monkeypatch.setattr(medharness.run.runner, "write_record", full)
    case = Case(tmp_path, fixture_data, fake_script, tiny_llama)
    assert main(case.argv()) == 2
    assert "disk full while writing results.json" in capsys.readouterr().err
    assert not (case.out / "demo").exists()


def test_every_case_is_in_the_documented_table() -> None:
    table = (ROOT / "docs" / "errors.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.M))
    elsewhere = {
        "disk-full",
        "degenerate-output",
        "nan-loglikelihood",
        *RECORD_CASES,
        *HOSTILE_CASES,
        *JUDGING_CASES,
        *HEALTHBENCH_CASES,
        "healthbench-no-graders",  # tests/test_healthbench.py
        "healthbench-grader-unreadable",
        *CUSTOM_CASES,
        *MEDCALC_CASES,
        *SOURCE_CASES,
        *ENDPOINT_CASES,
        *INTEROP_CASES,
        *PUBLISH_CASES,
        *RAY_CASES,
        *REPEATS_CASES,
        "ray-unit-failed",  # tests/test_ray_executor.py, with a cluster
        "ray-unplaceable",
        "endpoint-fault",  # tests/test_endpoint.py, with the budget
        "endpoint-budget",
        "pull-checksum-mismatch",  # tests/test_data_pull.py
        "pull-cut-download",
        "pull-read-only",
        "eval-other-settings",  # tests/test_newcomer.py
        "verify-empty",
        "pull-offline",  # tests/test_data_pull.py
        "pull-uncovered-member",
        "pull-archive-too-large",
        "pull-bad-mirror",
        "pull-mirror-credentials",
        "pull-too-slow",
        "pull-too-large",
        "pull-foreign-dataset",
        "endpoint-answer-too-large",  # tests/test_http.py
        "endpoint-impossible-logprobs",
        "rescore-endpoint-key",  # tests/test_hostile_files.py
        "playground-endpoint-key",
        "run-folder-link",
        "sample-log-untrue",
        "sample-log-repeated-id",
        "json-number-too-long",
        "checkpoint-unusable",  # tests/test_checkpoints.py
        "checkpoint-pickled-weights",
        "lm-eval-acc-disagrees",
        "lm-eval-repeated-doc",
        "lm-eval-odd-results",
        "custom-csv-cell",  # tests/test_custom_tasks.py
        "custom-group-value",
    }
    gate_cases = {*BAD_POLICIES, "incomparable-baseline", "missing-run"}  # tests/test_gate.py
    assert documented == {*CASES, *elsewhere, *gate_cases}
