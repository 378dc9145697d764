"""The Ray executor on a real two-node Ray cluster on loopback: clean runs, a worker killed
mid-unit, the driver killed mid-run, and trainings, each against the local executor's run
of the same config (results.json and every sample log byte for byte).

The cluster: ``ray start --head`` on 127.0.0.2 and a second node on 127.0.0.3 (both loopback
addresses: Ray replaces 127.0.0.1 by the machine's outward address), each with 2 CPUs and a
custom resource that marks it, so a model entry can be sent to one node and a test can see
where each unit ran. Worker PIDs come from the GCS actor table (Ray's state API proper needs
the dashboard, which the cluster runs without)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_fixture_data

from medharness.cli import main

RAY = str(Path(sys.executable).with_name("ray"))
MEDHARNESS = [sys.executable, "-m", "medharness"]
HEAD, SECOND = "127.0.0.2", "127.0.0.3"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HEAD, 0))
        return int(probe.getsockname()[1])


def ray_env() -> dict[str, str]:
    """The environment of every Ray process of these tests: no token (one left in ~/.ray by
    a local ray.init() would switch the cluster to token mode), no usage reports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node and a second node, 2 CPUs each; each marked by a custom resource."""
    pytest.importorskip("ray")
    port = free_port()
    address = f"{HEAD}:{port}"
    nodes = [
        ["--head", f"--node-ip-address={HEAD}", f"--port={port}", "--include-dashboard=false"],
        [f"--address={address}", f"--node-ip-address={SECOND}"],
    ]
    try:
        for node, (flags, mark) in enumerate(zip(nodes, ("head_node", "second_node"), strict=True)):
            resources = json.dumps({mark: 1})
            subprocess.run(
                [RAY, "start", *flags, "--num-cpus=2", f"--resources={resources}"],
                env=ray_env(),
                capture_output=True,
                check=True,
                timeout=120,
            )
            assert node == 0 or wait_for_nodes(address, 2)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], env=ray_env(), capture_output=True, timeout=120)


def wait_for_nodes(address: str, count: int) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(gcs(address, "[n for n in ray.nodes() if n['Alive']]")) >= count:
            return True
        time.sleep(1)
    return False


def gcs(address: str, expression: str) -> Any:
    """``expression`` evaluated by a short-lived driver of the cluster (the GCS tables)."""
    code = (
        "import json, ray; "
        f"ray.init(address={address!r}, logging_level='ERROR'); "
        f"print(json.dumps({expression}, default=str))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=ray_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def model_workers(address: str) -> list[dict[str, Any]]:
    return [
        actor
        for actor in gcs(address, "list(ray._private.state.actors().values())")
        if actor["ActorClassName"] == "ModelWorker"
    ]


def write_config(tmp: Path, models: list[dict[str, Any]], **extra: Any) -> Path:
    data = write_fixture_data(tmp / "data", scale=8)  # 64 MedQA questions
    config = {
        "name": "spread",
        "data_dir": str(data),
        "output_dir": str(tmp / "runs"),
        "bootstrap_resamples": 200,
        "models": models,
        "tasks": [{"name": "medqa_4opt"}, {"name": "medquad_gen", "limit": 24}],
        "generation": {"max_new_tokens": 16},
        "ray": {"shard_size": 16},
        **extra,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def fake(tmp: Path, **script: Any) -> str:
    path = tmp / "fake.yaml"
    path.write_text(yaml.safe_dump({"babble_words": 12, **script}), encoding="utf-8")
    return f"fake:{path}"


def on_ray(config: Path, address: str, *extra: str) -> list[str]:
    return [*MEDHARNESS, "run", str(config), "--executor", "ray", "--address", address, *extra]


def ray_run(config: Path, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        on_ray(config, address), env=ray_env(), capture_output=True, text=True, timeout=600
    )


def same_as_local(config: Path, run: Path, tmp: Path, *options: str) -> None:
    """The local executor's run of ``config`` equals ``run`` in every result and sample."""
    assert main(["run", str(config), "--out", str(tmp / "local"), *options]) == 0
    local = tmp / "local" / run.name

    def logs(folder: Path) -> list[Path]:  # the inputs and sample logs (train logs time)
        found = [*folder.glob("inputs/*.jsonl"), *folder.glob("samples/*/*.jsonl")]
        return sorted(path.relative_to(folder) for path in found)

    assert logs(local) == logs(run)
    assert len(logs(run)) >= 2
    for name in ["results.json", *logs(run)]:
        assert (run / name).read_bytes() == (local / name).read_bytes(), name
    assert (run / "report.html").is_file()
    assert json.loads((local / "manifest.json").read_text())["executor"]["kind"] == "local"


def manifest_of(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def covers_every_sample(units: list[dict[str, Any]], pair: tuple[str, str], n: int) -> None:
    """The units of a (model, task) are disjoint and cover its evaluation order."""
    ranges = sorted((u["start"], u["stop"]) for u in units if (u["model"], u["task"]) == pair)
    assert [start for start, _ in ranges] == [0, *(stop for _, stop in ranges[:-1])]
    assert ranges[-1][1] == n


def test_fake_models_spread_over_both_nodes_equal_the_local_run(
    cluster: str, tmp_path: Path
) -> None:
    script = fake(tmp_path, choose=[{"match": "(copy 3)", "answer": "B"}])
    models = [
        {"name": "first", "model": script, "resources": {"custom": {"head_node": 1}}},
        {"name": "second", "model": script, "resources": {"custom": {"second_node": 1}}},
        {"name": "anywhere", "model": script, "resources": {"replicas": 2, "num_cpus": 0.5}},
    ]
    settings = {"shard_size": 16, "address": cluster}
    config = write_config(tmp_path, models, executor="ray", ray=settings)
    done = subprocess.run(  # the config says where: no option needed
        [*MEDHARNESS, "run", str(config)], env=ray_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "spread"
    same_as_local(config, run, tmp_path, "--executor", "local")

    executor = manifest_of(run)["executor"]
    assert executor["kind"] == "ray" and executor["address"] == cluster
    assert executor["joined"] == cluster
    node_of = {
        mark: node["node_id"]
        for node in executor["nodes"]
        for mark in ("head_node", "second_node")
        if mark in node["resources"]
    }
    assert len(set(node_of.values())) == 2
    units = executor["units"]
    assert {u["node_id"] for u in units if u["model"] == "first"} == {node_of["head_node"]}
    assert {u["node_id"] for u in units if u["model"] == "second"} == {node_of["second_node"]}
    assert len(units) == 3 * (4 + 2)  # 64 questions and 24 answers in units of 16
    for model in ("first", "second", "anywhere"):
        covers_every_sample(units, (model, "medqa_4opt"), 64)
        covers_every_sample(units, (model, "medquad_gen"), 24)
    assert "units 12/12" in done.stderr  # the bar of each task counts units across models


def test_without_an_address_a_run_starts_a_ray_of_its_own(cluster: str, tmp_path: Path) -> None:
    """Ray's own default would join RAY_ADDRESS, else the cluster last started here."""
    config = write_config(tmp_path, [{"name": "f", "model": fake(tmp_path)}], executor="ray")
    env = {**ray_env(), "RAY_ADDRESS": cluster}
    done = subprocess.run(
        [*MEDHARNESS, "run", str(config)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    executor = manifest_of(tmp_path / "runs" / "spread")["executor"]
    theirs = {node["NodeID"] for node in gcs(cluster, "ray.nodes()")}
    ours = {node["node_id"] for node in executor["nodes"]}
    assert ours and not ours & theirs
    assert executor["address"] is None and executor["joined"] not in (None, cluster)
    assert {u["node_id"] for u in executor["units"]} <= ours


@pytest.mark.parametrize(
    "resources",
    # one refusal path; CI checks it once
    [
        {"num_gpus": 4},
        *(
            pytest.param(r, marks=pytest.mark.heavy)
            for r in ({"custom": {"a100": 1}}, {"num_cpus": 3})
        ),
    ],
)
def test_a_request_no_node_can_hold_is_refused_at_once(
    cluster: str, tmp_path: Path, resources: dict[str, Any]
) -> None:
    """Ray would keep such workers pending forever without a word."""
    config = write_config(
        tmp_path, [{"name": "f", "model": fake(tmp_path), "resources": resources}]
    )
    done = subprocess.run(
        on_ray(config, cluster), env=ray_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("medharness: error: model f: no node of the Ray cluster has the "), last
    assert "CPU 2" in last  # what the nodes do have


@pytest.mark.slow
def test_the_builtin_model_on_the_cluster_equals_the_local_run(
    cluster: str, tmp_path: Path
) -> None:
    models = [{"name": "smol", "model": "smollm2-135m-instruct", "resources": {"num_cpus": 2}}]
    config = write_config(tmp_path, models, tasks=[
        {"name": "medqa_4opt", "limit": 16}, {"name": "medquad_gen", "limit": 8},
    ])  # fmt: skip
    done = ray_run(config, cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "spread"
    same_as_local(config, run, tmp_path)
    described = manifest_of(run)["models"]["smol"]
    assert described["kind"] == "hf" and described["batch_size"] == 8


def started_until_a_unit_is_written(
    config: Path, address: str, partial: Path
) -> subprocess.Popen[str]:
    """A Ray run of ``config`` in the background, once its first unit's rows are on disk."""
    process = subprocess.Popen(
        on_ray(config, address), env=ray_env(), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (partial.is_file() and partial.read_text().count("\n") >= 16):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no unit finished"
        time.sleep(0.1)
    return process


def traced(trace: Path) -> list[str]:
    return trace.read_text().splitlines() if trace.exists() else []


def slow_config(tmp: Path, **ray_settings: Any) -> tuple[Path, Path, Path, Path]:
    """One fake model with two workers, each of which answers its first unit at once and
    then holds every call until the test makes the release file; its trace file; the partial
    log its MedQA rows go to; the release file."""
    trace, release = tmp / "calls.log", tmp / "release"
    script = fake(tmp, trace_file=str(trace), hold={"after": 1, "until": str(release)})
    models = [{"name": "slow", "model": script, "resources": {"replicas": 2}}]
    config = write_config(tmp, models, ray={"shard_size": 16, **ray_settings})
    partial = tmp / "runs" / ".spread.partial" / "samples" / "slow" / "medqa_4opt.jsonl.partial"
    return config, trace, partial, release


def held_workers(release: Path, process: subprocess.Popen[str], count: int = 2) -> list[int]:
    """The PIDs of the workers holding a unit, once ``count`` of them do: each is provably
    in the middle of a unit (the fake model marks a held call before it waits)."""
    deadline = time.monotonic() + 300
    while True:
        marks = release.parent.glob(f"{release.name}.held.*")
        held = sorted(int(mark.name.rsplit(".", 1)[1]) for mark in marks)
        if len(held) >= count:
            return held
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"fewer than {count} workers ever held a unit"
        time.sleep(0.05)


def gone(pids: list[int], timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_worker_killed_mid_unit_is_restarted_and_its_unit_sent_again(
    cluster: str, tmp_path: Path
) -> None:
    config, trace, partial, release = slow_config(tmp_path)
    process = started_until_a_unit_is_written(config, cluster, partial)
    victim = held_workers(release, process)[0]
    actor = next(a for a in model_workers(cluster) if int(a["Pid"]) == victim)
    os.kill(victim, signal.SIGKILL)
    release.touch()
    _, errors = process.communicate(timeout=600)
    assert process.returncode == 0, errors[-3000:]

    restarted = [a for a in model_workers(cluster) if a["ActorID"] == actor["ActorID"]]
    assert restarted[0]["NumRestarts"] == 1
    asked = traced(trace)
    assert len(asked) > len(set(asked))  # the killed worker's unit was asked again
    assert len(set(asked)) == 64 + 24
    same_as_local(config, tmp_path / "runs" / "spread", tmp_path)


def test_a_killed_driver_resumes_sending_only_the_unfinished_units(
    cluster: str, tmp_path: Path
) -> None:
    config, trace, partial, release = slow_config(tmp_path)
    process = started_until_a_unit_is_written(config, cluster, partial)
    workers = held_workers(release, process)
    process.kill()
    process.communicate()
    assert gone(workers), "Ray did not end the dead driver's workers"
    kept = {json.loads(line)["doc_id"] for line in partial.read_text().splitlines()}
    asked_before = len(traced(trace))
    assert 16 <= len(kept) < 64

    release.touch()
    done = ray_run(config, cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "spread"
    prompts = {
        row["doc_id"]: json.dumps(row["prompt"])
        for row in map(json.loads, (run / "inputs" / "medqa_4opt.jsonl").read_text().splitlines())
    }
    asked_again = [
        line.split("\t", 1)[1]
        for line in traced(trace)[asked_before:]
        if line.startswith("loglikelihood")
    ]
    assert sorted(asked_again) == sorted(p for d, p in prompts.items() if d not in kept)
    units = manifest_of(run)["executor"]["units"]
    covers_every_sample(units, ("slow", "medqa_4opt"), 64)  # those of both attempts
    same_as_local(config, run, tmp_path)


def test_a_unit_whose_worker_keeps_dying_fails_the_run_naming_it(
    cluster: str, tmp_path: Path
) -> None:
    config, _, partial, release = slow_config(tmp_path, max_retries=0)
    process = started_until_a_unit_is_written(config, cluster, partial)
    os.kill(held_workers(release, process)[0], signal.SIGKILL)
    release.touch()
    _, errors = process.communicate(timeout=600)
    assert process.returncode == 2, errors[-3000:]
    last = errors.strip().splitlines()[-1]
    assert last.startswith("medharness: error: unit slow/"), last
    assert "failed: its worker died and was restarted 0 times" in last
    kept = [path.read_text() for path in partial.parent.glob("*.jsonl*")]
    assert sum(text.count("\n") for text in kept) >= 16  # finished units stay for next time


def test_trainings_run_as_ray_tasks_and_their_adapters_come_back(
    cluster: str, tmp_path: Path, tiny_llama: Path
) -> None:
    train = {"max_steps": 4, "batch_size": 4, "logging_steps": 1, "learning_rate": 0.01}
    models = [
        {"name": "tuned", "model": str(tiny_llama), "batch_size": 1, "train": train,
         "resources": {"custom": {"second_node": 1}}},
    ]  # fmt: skip
    config = write_config(tmp_path, models, tasks=[{"name": "medquad_gen", "limit": 4}])
    done = ray_run(config, cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[tuned] training on the Ray cluster" in done.stderr
    run = tmp_path / "runs" / "spread"
    same_as_local(config, run, tmp_path)
    adapter = "train/tuned/adapter/adapter_model.safetensors"
    assert (run / adapter).read_bytes() == (tmp_path / "local" / "spread" / adapter).read_bytes()
    assert manifest_of(run)["models"]["tuned"]["adapter"] == "train/tuned/adapter"

    again = ray_run(config, cluster)  # finished: neither trained nor scored again
    assert again.returncode == 0 and "training on the Ray cluster" not in again.stderr


RAY_CASES = {  # id (as in docs/errors.md) -> (run's options, what the one line says)
    "ray-not-installed": (
        ["--executor", "ray"],
        "--executor ray needs Ray, which is not installed: pip install 'medharness-eval[ray]'",
    ),
    "ray-address-without-executor": (
        ["--address", "auto"],
        "--address names a Ray cluster: it needs --executor ray",
    ),
    "ray-unreachable": (
        ["--executor", "ray", "--address", f"{HEAD}:9"],
        f"cannot start or join Ray at {HEAD}:9: ",
    ),
}


@pytest.mark.parametrize("case", list(RAY_CASES))
def test_bad_ray_input_is_one_line_and_exit_2(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options, says = RAY_CASES[case]
    if case == "ray-unreachable":
        pytest.importorskip("ray")
    config = write_config(tmp_path, [{"name": "f", "model": fake(tmp_path)}])
    env = ray_env()
    if case == "ray-not-installed":  # a stand-in for ray that cannot be imported
        blocker = tmp_path / "no-ray"
        (blocker / "ray").mkdir(parents=True)
        (blocker / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
        env["PYTHONPATH"] = str(blocker)
    done = subprocess.run(
        [*MEDHARNESS, "run", str(config), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medharness: error: {says}"), lines
    assert not (tmp_path / "runs" / "spread").exists()
