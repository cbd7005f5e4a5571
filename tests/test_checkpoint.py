"""Checkpoints (labkit.checkpoint) and the model registry (labkit.models)."""
from __future__ import annotations

import os
import pickle
import random
import sys
import warnings

import helpers_train
import numpy as np
import pytest
import torch
from torch import nn

import labkit.checkpoint as ckpt
from labkit import models
from labkit.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    load_model,
    restore_rng_state,
    save_checkpoint,
)
from labkit.errors import CheckpointError, LabkitError
from labkit.models import available_models, build_model, model_config, register_model


def _linear(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return helpers_train.LinearRegressor(**kwargs)


# ----------------------------------------------------------------------------- registry
def test_model_config_records_constructor_arguments_with_defaults():
    model = helpers_train.NoisyMLP(3, dropout=0.5)  # positional argument becomes a keyword
    assert model_config(model) == {"name": "test_mlp", "n_in": 3, "hidden": 16, "n_out": 1,
                                   "dropout": 0.5}


def test_build_model_rebuilds_same_architecture():
    model = helpers_train.NoisyMLP(n_in=5, hidden=7)
    rebuilt = build_model(model_config(model))
    assert type(rebuilt) is helpers_train.NoisyMLP
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert model_config(rebuilt) == model_config(model)


def test_build_model_unknown_name_lists_available():
    with pytest.raises(LabkitError, match=r"unknown model name 'no_such_model'.*test_linear"):
        build_model({"name": "no_such_model"})


def test_build_model_rejects_bad_config_and_arguments():
    with pytest.raises(LabkitError, match="'name' entry"):
        build_model({"n_in": 3})
    with pytest.raises(LabkitError, match=r"'test_linear' .* does not accept .*width"):
        build_model({"name": "test_linear", "width": 3})


def test_model_config_of_unregistered_model_says_how_to_register():
    with pytest.raises(LabkitError, match=r"Linear is not a registered model.*register_model"):
        model_config(nn.Linear(2, 2))


def test_unregistered_subclass_of_registered_model_has_no_config():
    class Wider(helpers_train.LinearRegressor):
        def __init__(self):
            super().__init__(n_in=8)

    with pytest.raises(LabkitError, match="not a registered model"):
        model_config(Wider())


def test_model_config_rejects_non_plain_values_and_normalises_scalars():
    @register_model("test_config_values")
    class Configured(nn.Module):
        def __init__(self, value=None):
            super().__init__()
            self.value = value

    try:
        with pytest.raises(LabkitError, match=r"'value'.*Tensor.*is not a plain value"):
            model_config(Configured(value=torch.ones(2)))
        config = model_config(Configured(value=[np.float32(0.5), torch.__version__]))
        assert config["value"] == [0.5, str(torch.__version__)]
        assert [type(v) for v in config["value"]] == [float, str]
    finally:
        models._REGISTRY.pop("test_config_values")


def test_register_model_rejects_star_args_and_taken_names():
    with pytest.raises(LabkitError, match=r"takes \*args"):
        @register_model("test_star_args")
        class StarArgs(nn.Module):
            def __init__(self, *sizes):
                super().__init__()

    with pytest.raises(LabkitError, match=r"'test_linear'.*taken by .*LinearRegressor"):
        @register_model("test_linear")
        class Impostor(nn.Module):
            def __init__(self, n_in=4):
                super().__init__()

    @register_model("test_no_init")
    class NoInit(nn.Module):  # inherits nn.Module.__init__(*args, **kwargs): takes nothing
        pass

    try:
        assert model_config(NoInit()) == {"name": "test_no_init"}
    finally:
        models._REGISTRY.pop("test_no_init")


def test_register_model_again_replaces_the_same_class():
    # what re-running a notebook cell does: same module, same qualified name
    namespace: dict = {"__name__": "notebook_cell"}
    source = ("from torch import nn\nfrom labkit.models import register_model\n"
              "@register_model('test_rerun')\nclass Cell(nn.Module):\n"
              "    def __init__(self, k=1):\n        super().__init__()\n")
    try:
        exec(compile(source, "<cell>", "exec"), namespace)  # noqa: S102
        first = namespace["Cell"]
        exec(compile(source, "<cell>", "exec"), namespace)  # noqa: S102
        assert namespace["Cell"] is not first
        assert type(build_model({"name": "test_rerun", "k": 2})) is namespace["Cell"]
    finally:
        models._REGISTRY.pop("test_rerun", None)


def test_build_model_imports_model_modules_on_demand(tmp_path, monkeypatch):
    (tmp_path / "lazy_demo.py").write_text(
        "from torch import nn\nfrom labkit.models import register_model\n"
        "@register_model('lazy_demo')\nclass LazyDemo(nn.Linear):\n"
        "    def __init__(self, size=3):\n        super().__init__(size, size)\n")
    (tmp_path / "broken_demo.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    try:
        assert "labkit.models.lazy_demo" not in sys.modules
        model = build_model({"name": "lazy_demo", "size": 4})
        assert model.weight.shape == (4, 4)
        with pytest.raises(LabkitError, match=r"broken_demo failed to import.*broken on purpose"):
            build_model({"name": "still_missing"})
        with pytest.warns(UserWarning, match="broken_demo"):
            assert "lazy_demo" in available_models()
    finally:
        models._REGISTRY.pop("lazy_demo", None)
        sys.modules.pop("labkit.models.lazy_demo", None)
        sys.modules.pop("labkit.models.broken_demo", None)


# ----------------------------------------------------------------------------- save and load
def _save(path, model=None, step=3, **kwargs):
    model = model if model is not None else _linear()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    return save_checkpoint(path, model=model, step=step, epoch=1, optimizer=optimizer,
                           manifest={"seed": 0, "torch": torch.__version__}, **kwargs)


def test_save_and_load_round_trip(tmp_path):
    model = _linear()
    path = _save(tmp_path / "a.pt", model, extra={"note": "hi", "tensor": torch.arange(3)})
    # the file must load with plain torch.load(weights_only=True), not only through labkit
    raw = torch.load(path, weights_only=True)
    assert raw["labkit_checkpoint"] == ckpt.FORMAT_VERSION
    loaded = load_checkpoint(path, expected_model="test_linear")
    assert loaded["model_name"] == "test_linear"
    assert loaded["config"] == {"name": "test_linear", "n_in": 4, "n_out": 1}
    assert (loaded["step"], loaded["epoch"]) == (3, 1)
    assert loaded["manifest"]["torch"] == str(torch.__version__)
    assert loaded["extra"]["note"] == "hi"
    assert torch.equal(loaded["extra"]["tensor"], torch.arange(3))
    assert "scaler" not in loaded and loaded["scheduler"] is None
    assert loaded["path"] == str(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    fresh = torch.optim.Adam(_linear(seed=1).parameters(), lr=0.1)
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.state_dict()["state"][0]["step"] == 1


def test_save_leaves_no_temporary_file_and_respects_umask(tmp_path):
    path = _save(tmp_path / "sub" / "a.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.pt", step=1)

    def failing_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        _save(path, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_save_rejects_values_weights_only_cannot_load(tmp_path):
    with pytest.raises(LabkitError, match=r"extra\['callback'\].*not a plain value"):
        _save(tmp_path / "a.pt", extra={"callback": print})
    assert not (tmp_path / "a.pt").exists()


def test_unregistered_model_saves_without_config(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", model=nn.Linear(2, 2), step=0)
    loaded = load_checkpoint(path)
    assert loaded["config"] is None and loaded["model_name"] is None
    with pytest.raises(CheckpointError, match="does not store a model config"):
        load_model(path)


# ----------------------------------------------------------------------------- load errors
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder.*latest_checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "text"])
def test_damaged_files(tmp_path, damage):
    path = _save(tmp_path / "a.pt")
    data = path.read_bytes()
    content = {"truncated": data[: len(data) // 2], "random": np.random.default_rng(0).bytes(999),
               "empty": b"", "text": b"hello, not a checkpoint"}[damage]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{path}.* damaged or not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_bare_state_dict(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_linear().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"bare state_dict \(2 tensors\).*load_state_dict"):
        load_checkpoint(path)


def test_foreign_dict_without_marker(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"epoch": 3, "net": _linear().state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"not a labkit checkpoint.*\['epoch', 'net'\]"):
        load_checkpoint(path)


class _Malicious:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"labkit_checkpoint": 1, "model": _Malicious(marker)}
    refused = r"contains a Python object \((posix|nt)\.system\).*refused"
    if writer == "torch.save":
        torch.save(payload, path)
        expected = refused
    else:
        protocol = int(writer[-1])
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=protocol)
        # torch's weights_only unpickler stops at the framing opcode of protocol 4+ already
        expected = refused if protocol == 2 else "damaged or not a PyTorch checkpoint"
    with pytest.raises(CheckpointError, match=rf"{path}.*{expected}"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_checkpoint_of_another_model(tmp_path):
    path = _save(tmp_path / "a.pt")
    with pytest.raises(CheckpointError,
                       match=r"checkpoint of model 'test_linear', not 'spec_unet'"):
        load_checkpoint(path, expected_model="spec_unet")
    with pytest.raises(CheckpointError, match="not 'test_mlp'"):
        load_model(path, expected_model="test_mlp")


def test_newer_format_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"labkit_checkpoint": 99, "model": {}}, path)
    with pytest.raises(CheckpointError, match="format 99.*Update labkit"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- load_model
def test_load_model_rebuilds_weights_and_eval_mode(tmp_path):
    model = helpers_train.NoisyMLP(hidden=8)
    path = save_checkpoint(tmp_path / "m.pt", model=model, step=0)
    loaded = load_model(path, expected_model="test_mlp")
    assert type(loaded) is helpers_train.NoisyMLP and not loaded.training
    x = torch.randn(5, 4)
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_load_model_names_missing_unexpected_and_misshapen_keys(tmp_path):
    model = _linear()
    state = model.state_dict()
    state["extra.weight"] = state.pop("linear.bias")
    checkpoint = {"labkit_checkpoint": 1, "model_name": "test_linear", "model": state,
                  "config": model_config(model), "step": 0, "epoch": 0}
    torch.save(checkpoint, tmp_path / "keys.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: linear\.bias; "
                                              r"unexpected keys: extra\.weight"):
        load_model(tmp_path / "keys.pt")
    path = save_checkpoint(tmp_path / "shape.pt", model=_linear(), step=0,
                           config={"name": "test_linear", "n_in": 6, "n_out": 1})
    with pytest.raises(CheckpointError,
                       match=r"shapes differ.*linear\.weight \(1, 4\) vs \(1, 6\)"):
        load_model(path)


def test_load_model_of_unknown_model_name(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model=_linear(), step=0,
                           config={"name": "gone_model"})
    with pytest.raises(CheckpointError, match=r"cannot rebuild its model.*'gone_model'"):
        load_model(path)


# ----------------------------------------------------------------------------- latest
def test_latest_checkpoint_by_stored_step(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 10, 20):
        _save(tmp_path / "checkpoints" / f"step_{step:07d}.pt", step=step)
    _save(tmp_path / "best.pt", step=99)  # best.pt is an older state: never resumed from
    (tmp_path / "checkpoints" / ".step_0000030.pt.123.abcd.tmp").write_bytes(b"half")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_0000020.pt"
    _save(tmp_path / "final.pt", step=20)
    assert latest_checkpoint(tmp_path) == tmp_path / "final.pt"  # final wins a tie
    _save(tmp_path / "checkpoints" / "step_0000025.pt", step=25)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_0000025.pt"


def test_latest_checkpoint_skips_damaged_files_with_a_warning(tmp_path):
    _save(tmp_path / "checkpoints" / "step_0000005.pt", step=5)
    (tmp_path / "checkpoints" / "step_0000010.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.warns(UserWarning, match=r"skipping .*step_0000010\.pt.*damaged"):
        found = latest_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoints" / "step_0000005.pt"


def test_latest_checkpoint_in_a_checkpoints_folder_itself(tmp_path):
    _save(tmp_path / "step_0000007.pt", step=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(tmp_path) == tmp_path / "step_0000007.pt"


# ----------------------------------------------------------------------------- RNG
def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in NumPy's legacy state
    path = save_checkpoint(tmp_path / "r.pt", model=_linear(), step=0)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(100)
    np.random.seed(100)
    random.seed(100)
    restore_rng_state(load_checkpoint(path)["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_capture_rng_state_is_plain_for_weights_only(tmp_path):
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    state = torch.load(tmp_path / "rng.pt", weights_only=True)
    assert set(state) >= {"torch", "numpy", "python"}
