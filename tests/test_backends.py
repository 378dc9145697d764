"""A backend is one registered kind: one registered here, in a test, is named by its spec
prefix or by an entry's ``backend``, accepted by the config and loaded, and no other module
names it; the backends medharness ships keep their prefixes and engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from medharness.config import EntryCommon, ModelEntry, parse_config, with_backend_settings
from medharness.core.errors import UserError
from medharness.core.validation import Strict
from medharness.evaluate import load_entry, shared_base_key
from medharness.models.loading import LoadRequest, LoadSettings, load_model, load_with
from medharness.models.specs import BACKENDS, Backend, is_hub_id, register


def load_echo(request: LoadRequest) -> LoadRequest:
    """A loader that hands back what it was given, for the test to read."""
    return request


@pytest.fixture
def echo_backends() -> Iterator[None]:
    register(Backend("echo", f"{__name__}:load_echo", prefix="echo:"))
    register(Backend("echo-engine", f"{__name__}:load_echo"))
    yield
    del BACKENDS["echo"], BACKENDS["echo-engine"]


def entry_of(model: dict[str, object]) -> ModelEntry:
    config = parse_config({"name": "x", "models": [model], "tasks": ["medqa_4opt"]}, "run.yaml")
    return config.models[0]


@pytest.mark.usefixtures("echo_backends")
def test_a_backend_registered_here_is_parsed_configured_and_loaded() -> None:
    entry = entry_of({"name": "m", "model": "echo:hello", "system_prompt": "be brief"})
    assert not is_hub_id("echo:hello")
    assert shared_base_key(entry, "echo:hello") is None  # loads no weights here
    request = load_entry(entry)
    assert isinstance(request, LoadRequest)
    assert (request.spec, request.source, request.adapter) == ("echo:hello", "hello", None)
    assert request.settings.system_prompt == "be brief"


@pytest.mark.usefixtures("echo_backends")
def test_an_engine_registered_here_is_an_entrys_backend(tmp_path: Path) -> None:
    entry = entry_of({"name": "m", "model": str(tmp_path), "backend": "echo-engine"})
    assert shared_base_key(entry, str(tmp_path)) is not None  # it loads these weights
    request = load_model(str(tmp_path), backend="echo-engine", device="cpu", batch_size=3)
    assert isinstance(request, LoadRequest)
    assert (request.source, request.settings.device, request.settings.batch_size) == (
        str(tmp_path),
        "cpu",
        3,
    )


def test_an_unregistered_backend_is_refused_as_before(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"models\.0\.backend: Input should be 'auto', 'hf' or 'vllm'$"
    ):
        entry_of({"name": "m", "model": str(tmp_path), "backend": "echo-engine"})
    with pytest.raises(UserError, match="unknown backend 'echo-engine'; use auto, hf or vllm"):
        load_model(str(tmp_path), backend="echo-engine", device="cpu")


def test_a_name_or_prefix_is_registered_once() -> None:
    with pytest.raises(ValueError, match="taken"):
        register(Backend("hf", "medharness.models.hf:load"))
    with pytest.raises(ValueError, match="taken"):
        register(Backend("other-fake", "medharness.models.fake:load", prefix="fake:"))
    with pytest.raises(ValueError, match="taken"):
        register(Backend("auto", "medharness.models.hf:load"))


def test_the_shipped_backends_keep_their_prefixes_and_engines() -> None:
    prefixes = {name: backend.prefix for name, backend in BACKENDS.items()}
    assert prefixes == {"hf": None, "fake": "fake:", "openai": "openai:", "vllm": None}


class EchoSettings(Strict):
    """An echo backend's own entry key."""

    echo_volume: int | None = None


def test_a_backends_settings_are_entry_keys_it_alone_takes_and_its_loader_reads() -> None:
    """Declared once with the backend, its settings become keys of every model entry (no
    field in the config for them), refused on entries of another kind, and handed to its
    loader typed."""
    echo = Backend("echo", f"{__name__}:load_echo", prefix="echo:", settings=EchoSettings,
                   misplaced="echo_volume belongs to echo: models")  # fmt: skip
    register(echo)
    try:
        entry_model = with_backend_settings(EntryCommon)
        entry = entry_model.model_validate({"name": "m", "model": "echo:x", "echo_volume": 3})
        settings = LoadSettings.of(entry)
        assert settings.of_backend(EchoSettings) == EchoSettings(echo_volume=3)
        request = load_with(entry.model, None, settings)
        assert isinstance(request, LoadRequest)
        assert request.settings.of_backend(EchoSettings).echo_volume == 3
        with pytest.raises(ValidationError, match="echo_volume belongs to echo: models"):
            entry_model.model_validate({"name": "m", "model": "fake:x.yaml", "echo_volume": 3})
        with pytest.raises(ValidationError, match="echo_volume"):
            EntryCommon.model_validate({"name": "m", "model": "echo:x", "echo_volume": 3})
    finally:
        del BACKENDS["echo"]


def test_the_config_declares_no_backends_keys_of_its_own() -> None:
    """Every model-entry key that is not common to all backends is one a backend declares."""
    declared = {name for backend in BACKENDS.values() for name in backend.setting_names}
    own = set(ModelEntry.model_fields) - set(EntryCommon.model_fields) - {"resources"}
    assert own == declared == {"base_url", "api_key_env", "requests", "vllm"}
