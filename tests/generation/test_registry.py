import pytest
import torch

from generation.errors import ConfigError, ModelInitError, UnknownModelError
from generation.registry import ModelRegistry


def test_load_once_and_get() -> None:
    reg = ModelRegistry("cpu", {"flux": 6.0})
    model = torch.nn.Linear(4, 4)
    assert reg.load("flux", lambda: model) is model
    assert reg.get_model("flux") is model
    assert "flux" in reg and reg.names() == ["flux"]
    assert reg.load_costs_gb()["flux"] >= 0
    with pytest.raises(ModelInitError, match="'flux' is already loaded"):
        reg.load("flux", lambda: model)


def test_unknown_name_lists_what_is_loaded() -> None:
    reg = ModelRegistry("cpu")
    reg.load("clip_b", object)
    with pytest.raises(UnknownModelError, match=r"unknown model 'clip_xl' \(loaded: clip_b\)"):
        reg.get_model("clip_xl")
    with pytest.raises(KeyError):  # still a KeyError for callers that expect one
        reg.get_model("nope")


def test_out_of_memory_at_load_names_model_budget_and_free_memory() -> None:
    reg = ModelRegistry("cpu", {"liveportrait": 3.5})

    def loader():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(ModelInitError) as info:
        reg.load("liveportrait", loader)
    text = str(info.value)
    assert "model 'liveportrait'" in text
    assert "budget 3.50 GB" in text
    assert "GB free of" in text
    assert "Tried to allocate 2.00 GiB" in text
    assert "liveportrait" not in reg


def test_other_load_failures_are_init_errors_but_engine_errors_pass_through() -> None:
    reg = ModelRegistry("cpu")
    with pytest.raises(ModelInitError, match=r"loading model 'kokoro' failed: ValueError: bad config"):
        reg.load("kokoro", lambda: (_ for _ in ()).throw(ValueError("bad config")))

    def config_problem():
        raise ConfigError("models.precision.flux: nope")

    with pytest.raises(ConfigError, match="models.precision.flux"):
        reg.load("flux", config_problem)
