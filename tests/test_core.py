import random

import numpy as np
import pytest
import torch

import labkit
from labkit import core


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, False),
        ({"LABKIT_FAST": "1"}, True),
        ({"LABKIT_FAST": "0"}, False),
        ({"CI": "true"}, True),
        ({"CI": "true", "LABKIT_FAST": "0"}, False),
        ({"CI": "1", "LABKIT_FAST": "yes"}, True),
    ],
)
def test_fast_mode_follows_the_environment(monkeypatch, env, expected):
    monkeypatch.delenv("LABKIT_FAST", raising=False)
    monkeypatch.delenv("CI", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert labkit.fast_mode() is expected
    assert labkit.scale(100, 3) == (3 if expected else 100)


def test_fast_mode_rejects_a_value_it_cannot_read(monkeypatch):
    monkeypatch.setenv("LABKIT_FAST", "maybe")
    with pytest.raises(ValueError, match="LABKIT_FAST"):
        labkit.fast_mode()


def test_device_is_cuda_only_when_available(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert labkit.device().type == expected
    assert labkit.device("cpu").type == "cpu"
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert labkit.device().type == "cpu"


def test_seed_everything_repeats_every_random_stream():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    labkit.seed_everything(123)
    first = draw()
    labkit.seed_everything(123)
    assert draw() == first
    labkit.seed_everything(124)
    assert draw() != first


def test_run_manifest_names_what_reproduces_a_run(tmp_path):
    data = tmp_path / "a.wav"
    data.write_bytes(b"1234")
    manifest = labkit.run_manifest(seed=7, data_fingerprint=core.fingerprint([data]), note="x")
    assert manifest["seed"] == 7
    assert manifest["labkit"] == labkit.__version__
    assert manifest["torch"] == torch.__version__
    assert manifest["data_fingerprint"] and len(manifest["data_fingerprint"]) == 16
    assert manifest["note"] == "x"
    assert {"git_commit", "device", "fast_mode", "python"} <= set(manifest)


def test_fingerprint_changes_with_the_data(tmp_path):
    a = tmp_path / "a.wav"
    a.write_bytes(b"1234")
    before = core.fingerprint([a])
    a.write_bytes(b"123456")
    assert core.fingerprint([a]) != before
    assert core.fingerprint([]) is None


def test_errors_are_value_errors():
    for error in (labkit.AudioError, labkit.CheckpointError, labkit.DataError):
        assert issubclass(error, labkit.LabkitError)
        assert issubclass(error, ValueError)
