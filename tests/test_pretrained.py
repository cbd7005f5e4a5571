"""Shipped models: the manifest, sha256 checks on load, name/path resolution, the real files."""
import json

import numpy as np
import pytest
import torch

from labkit import pretrained
from labkit.checkpoint import save_checkpoint
from labkit.errors import CheckpointError, LabkitError
from labkit.models.spec_unet import SpecUNet, SpecUNetSeparator
from labkit.separate import separate

SR = 8000


def tiny(seed=0):
    torch.manual_seed(seed)
    unet = SpecUNet(levels=2, base_channels=4, kernel_size=3, norm="batch", log_input=True)
    model = SpecUNetSeparator.from_unet(unet, sample_rate=SR, n_fft=256, hop_length=64,
                                        chunk_frames=32)
    # non-trivial batch-norm statistics, so that a lost buffer would show
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "models"
    pretrained.export_pretrained(tiny(), "tiny", folder=out, train_command="labkit train x",
                                 description="a test model", metrics={"sdr": 1.5},
                                 defaults=("vocals",))
    return out


def test_export_writes_the_file_and_a_complete_manifest_entry(folder):
    table = json.loads((folder / "manifest.json").read_text())
    entry = table["models"]["tiny"]
    path = folder / "tiny.pt"
    assert entry["file"] == "tiny.pt" and entry["size_bytes"] == path.stat().st_size
    assert entry["sha256"] == pretrained.sha256_of(path)
    assert (entry["sample_rate"], entry["channels"], entry["sources"]) == (
        SR, 1, ["vocals", "accompaniment"])
    assert entry["parameters"] == sum(p.numel() for p in tiny().parameters())
    assert entry["train_command"] == "labkit train x" and entry["metrics"] == {"sdr": 1.5}
    assert entry["dtype"] == "float16" and table["defaults"] == {"vocals": "tiny"}
    assert pretrained.available(folder) == ["tiny"]
    assert pretrained.default_model("vocals", folder) == "tiny"
    with pytest.raises(CheckpointError, match="no shipped model is the default for 'stems'"):
        pretrained.default_model("stems", folder)


def test_float16_storage_is_about_half_of_float32(tmp_path):
    model = SpecUNetSeparator.from_unet(SpecUNet(levels=2, base_channels=32), sample_rate=SR)
    full = save_checkpoint(tmp_path / "full.pt", model=model, step=0, rng_state=False)
    entry = pretrained.export_pretrained(model, "big", folder=tmp_path, train_command="-")
    assert entry["size_bytes"] < 0.55 * full.stat().st_size


def test_load_gives_float32_weights_equal_to_the_original_up_to_float16(folder):
    original = tiny()
    loaded = pretrained.load_pretrained("tiny", folder=folder)
    assert not loaded.training and loaded.pretrained["name"] == "tiny"
    for (name, a), b in zip(original.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype, name
        torch.testing.assert_close(b, a.half().to(a.dtype), rtol=0, atol=0)
    x = np.random.default_rng(0).standard_normal((1, SR)).astype(np.float32) * 0.1
    np.testing.assert_allclose(separate(loaded, x, SR, progress=False),
                               separate(original, x, SR, progress=False), atol=2e-3)


def test_a_changed_file_is_refused_with_its_hashes(folder):
    path = folder / "tiny.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    expected = json.loads((folder / "manifest.json").read_text())["models"]["tiny"]["sha256"]
    with pytest.raises(CheckpointError, match=rf"tiny.pt: sha256 [0-9a-f]{{64}} does not match "
                       rf"the manifest's {expected}.*git checkout data/models.*labkit train x"):
        pretrained.load_pretrained("tiny", folder=folder)
    path.unlink()
    with pytest.raises(CheckpointError, match="which is missing"):
        pretrained.verify("tiny", folder)


def test_resolve_model_accepts_names_files_and_run_folders(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_MODELS", str(folder))
    assert pretrained.models_dir() == folder
    assert pretrained.resolve_model("tiny").pretrained["name"] == "tiny"
    assert pretrained.resolve_model(None, task="vocals").pretrained["name"] == "tiny"
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", model=tiny(seed=1), step=3)
    for target in (run, run / "best.pt", str(run / "best.pt")):
        model = pretrained.resolve_model(target)
        torch.testing.assert_close(model.state_dict()["unet.last.weight"],
                                   tiny(seed=1).state_dict()["unet.last.weight"])
    with pytest.raises(CheckpointError, match=r"'nope': neither a shipped model \(shipped: "
                       r"tiny\) nor an existing checkpoint"):
        pretrained.resolve_model("nope")
    with pytest.raises(CheckpointError, match="'nope' is not a shipped model"):
        pretrained.model_info("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="folder without checkpoints"):
        pretrained.resolve_model(tmp_path / "empty")


def test_a_bare_spectrogram_unet_checkpoint_is_wrapped_as_notebook_02s_separator(tmp_path):
    unet = SpecUNet(levels=2, base_channels=4)
    path = save_checkpoint(tmp_path / "unet.pt", model=unet, step=1)  # what `train specunet` saves
    model = pretrained.resolve_model(path)
    assert isinstance(model, SpecUNetSeparator)
    assert (model.sample_rate, model.n_fft, model.hop_length, model.channels) == (
        22050, 1024, 256, 1)
    torch.testing.assert_close(model.unet.last.weight, unet.last.weight)


def test_export_refuses_a_model_without_the_separator_attributes(tmp_path):
    with pytest.raises(LabkitError, match="lacks sample_rate"):
        pretrained.export_pretrained(SpecUNet(levels=1, base_channels=2), "x",
                                     folder=tmp_path, train_command="-")
    with pytest.raises(LabkitError, match="'everything' is not a task"):
        pretrained.export_pretrained(tiny(), "x", folder=tmp_path, train_command="-",
                                     defaults=("everything",))


# ----------------------------------------------------------------------------- the shipped files
def shipped_names():
    try:
        return pretrained.available()
    except CheckpointError:
        return []


def test_the_shipped_models_are_a_few_megabytes_with_reproducible_commands():
    table = pretrained.manifest()
    names = sorted(table["models"])
    assert names, "data/models/manifest.json lists no models"
    total = sum(entry["size_bytes"] for entry in table["models"].values())
    assert total < 10e6, f"the shipped models take {total / 1e6:.1f} MB; keep them a few MB"
    for name, entry in table["models"].items():
        assert entry["train_command"].startswith(f"labkit train pretrained {name}")
        assert entry["sample_rate"] in (22050, 44100)
    for task, name in table["defaults"].items():
        assert task in pretrained.TASKS and name in names


@pytest.mark.parametrize("name", shipped_names())
def test_each_shipped_model_loads_and_matches_its_manifest(name):
    info = pretrained.model_info(name)
    model = pretrained.load_pretrained(name)
    assert (model.sample_rate, model.channels, list(model.sources)) == (
        info["sample_rate"], info["channels"], info["sources"])
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    x = np.zeros((2, model.sample_rate // 2), np.float32)
    x[:, ::100] = 0.5
    out = separate(model, x, model.sample_rate, progress=False)
    assert out.shape == (len(model.sources), 2, x.shape[-1]) and np.isfinite(out).all()
