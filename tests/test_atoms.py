"""Gabor atoms: the renderer and model (labkit.models.atoms), fitting (labkit.atoms.fit) and runs
(labkit.atoms.runs, the fit-atoms command)."""
import argparse
import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml

from labkit import audio as audio_io
from labkit import metrics
from labkit.atoms import codec, runs
from labkit.atoms import fit as atoms_fit
from labkit.checkpoint import load_model, save_checkpoint
from labkit.errors import LabkitError
from labkit.models import build_model, model_config
from labkit.models.atoms import GaborAtoms, render_atom, render_atoms, support_length

SR = 8000


def random_params(n, length, seed=0, dtype=torch.float64, chirp=True, widths=(0.001, 0.03)):
    g = torch.Generator().manual_seed(seed)
    rand = lambda: torch.rand(n, generator=g, dtype=dtype)
    return {
        "amplitude": rand() + 0.1,
        "centre": rand() * length / SR,
        "width": torch.exp(math.log(widths[0]) + rand() * math.log(widths[1] / widths[0])),
        "frequency": rand() * 3000,
        "phase": (rand() * 2 - 1) * math.pi,
        "chirp": (rand() * 2 - 1) * 2000 if chirp else torch.zeros(n, dtype=dtype),
    }


def dense_sum(p, length):
    return sum(render_atom(p["amplitude"][i], p["centre"][i], p["width"][i], p["frequency"][i],
                           p["phase"][i], SR, length, p["chirp"][i])
               for i in range(p["amplitude"].shape[0]))


def fast(p, length, support=3.0):
    return render_atoms(p["amplitude"], p["centre"], p["width"], p["frequency"], p["phase"], SR,
                        length, p["chirp"], support)


# --------------------------------------------------------------------------- rendering
def test_render_atom_formula():
    y = render_atom(0.5, 0.1, 0.01, 440.0, 0.3, SR, 2000)
    assert y.shape == (2000,) and y.dtype == torch.float32
    centre = round(0.1 * SR)
    assert float(y[centre]) == pytest.approx(0.5 * math.cos(0.3), rel=1e-5)
    t = np.arange(2000) / SR - 0.1
    expected = 0.5 * np.exp(-0.5 * (t / 0.01) ** 2) * np.cos(2 * np.pi * 440 * t + 0.3)
    np.testing.assert_allclose(y.numpy(), expected, atol=5e-5)  # float32 phase rounding
    chirped = render_atom(1.0, 0.1, 0.01, 440.0, 0.0, SR, 2000, chirp=1000.0).double().numpy()
    np.testing.assert_allclose(chirped, np.exp(-0.5 * (t / 0.01) ** 2) * np.cos(
        2 * np.pi * 440 * t + np.pi * 1000 * t**2), atol=5e-5)


def test_render_atoms_equals_the_dense_sum():
    p = random_params(40, 4000)
    np.testing.assert_allclose(fast(p, 4000, support=9.0).numpy(), dense_sum(p, 4000).numpy(),
                               atol=1e-10)


def test_support_truncation_error_is_bounded():
    p = random_params(40, 4000, seed=1)
    error = (fast(p, 4000, support=3.0) - dense_sum(p, 4000)).abs().max()
    # each atom is cut below exp(-4.5) of its peak; a few atoms overlap at any sample
    assert float(error) <= math.exp(-4.5) * float(p["amplitude"].sum())
    assert float(error) > 0  # it does truncate


def test_atoms_at_the_edges_and_mixed_widths():
    length = 3000
    p = random_params(300, length, seed=2, widths=(0.0006, 0.05))
    p["centre"][:3] = torch.tensor([0.0, length / SR, 1e-5], dtype=torch.float64)
    np.testing.assert_allclose(fast(p, length, 9.0).numpy(), dense_sum(p, length).numpy(),
                               atol=1e-9)


def test_gradients_match_autograd_of_the_dense_formula():
    p = {k: v.requires_grad_(True) for k, v in random_params(6, 1200, seed=3).items()}
    names = list(p)
    target = torch.randn(1200, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ((fast(p, 1200, 9.0) - target) ** 2).sum().backward()
    fast_grads = [p[n].grad.clone() for n in names]
    for n in names:
        p[n].grad = None
    ((dense_sum(p, 1200) - target) ** 2).sum().backward()
    for n, g in zip(names, fast_grads):
        torch.testing.assert_close(g, p[n].grad, rtol=1e-7, atol=1e-9, msg=f"gradient of {n}")


def test_gradcheck():
    # a wide support: finite differences of a centre that crosses a sample boundary shift the
    # window, and the tail it cuts must be far below gradcheck's tolerance
    p = random_params(3, 300, seed=4)
    inputs = tuple(p[k].requires_grad_(True) for k in p)
    assert torch.autograd.gradcheck(
        lambda a, c, w, f, ph, r: render_atoms(a, c, w, f, ph, SR, 300, r, 9.0), inputs,
        fast_mode=True)


def test_render_atoms_rejects_bad_input():
    p = random_params(5, 1000, dtype=torch.float32)
    with pytest.raises(LabkitError, match="shape"):
        render_atoms(p["amplitude"][:4], p["centre"], p["width"], p["frequency"], p["phase"],
                     SR, 1000)
    with pytest.raises(LabkitError, match="positive"):
        render_atoms(p["amplitude"], p["centre"], -p["width"], p["frequency"], p["phase"],
                     SR, 1000)
    assert support_length(0.01, 8000, 3.0) == 2 * 240 + 1


# --------------------------------------------------------------------------- the model
def test_model_renders_and_round_trips_params():
    p = random_params(20, 4000, dtype=torch.float32, chirp=True)
    model = GaborAtoms.from_params(p, SR, 4000)
    assert model.has_chirp and model.n_atoms == 20
    out = model()
    assert out.shape == (1, 4000)
    back = model.params()
    for name in ("amplitude", "centre", "width", "frequency", "chirp"):
        torch.testing.assert_close(back[name], p[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[0], fast(p, 4000), rtol=1e-4, atol=1e-5)


def test_project_keeps_the_sound():
    p = random_params(10, 4000, dtype=torch.float32, chirp=False)
    model = GaborAtoms.from_params(p, SR, 4000)
    before = model().detach()
    with torch.no_grad():
        model.amplitude[:4] *= -1
        model.phase[:4] += math.pi  # the same atoms, written differently
        model.phase[4:6] += 4 * math.pi
    model.project_()
    assert bool((model.amplitude >= 0).all())
    assert bool((model.phase >= -math.pi).all() and (model.phase < math.pi).all())
    torch.testing.assert_close(model().detach(), before, atol=1e-4, rtol=0)
    with torch.no_grad():
        model.log_width.fill_(5.0)
        model.frequency.fill_(1e6)
    model.project_()
    assert float(model.width.detach().max()) == pytest.approx(model.max_width)
    assert float(model.frequency.detach().max()) == SR / 2


def test_model_is_registered_and_checkpoints(tmp_path):
    model = GaborAtoms.from_params(random_params(12, 2000, dtype=torch.float32), SR, 2000)
    config = model_config(model)
    assert config["name"] == "gabor_atoms" and config["n_atoms"] == 12
    assert build_model(config).n_atoms == 12
    path = save_checkpoint(tmp_path / "atoms.pt", model=model, step=3)
    loaded = load_model(path, expected_model="gabor_atoms")
    torch.testing.assert_close(loaded(), model())


def test_model_errors():
    with pytest.raises(LabkitError, match="min_width"):
        GaborAtoms(4, SR, 100, min_width=0.1, max_width=0.01)
    model = GaborAtoms(3, SR, 100)
    with pytest.raises(LabkitError, match="unknown parameter"):
        model.set_params(pitch=torch.zeros(3))
    with pytest.raises(LabkitError, match="shape"):
        model.set_params(amplitude=torch.zeros(4))
    with pytest.raises(LabkitError, match="no chirp"):
        model.set_params(chirp=torch.ones(3))


# --------------------------------------------------------------------------- fitting
def tone(seconds=0.5, freqs=(440.0, 1320.0), sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.4 / (i + 1) * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs))
    return (x * np.hanning(t.size)).astype(np.float32)[None]


def test_residual_peaks_find_a_sinusoid():
    t = np.arange(SR) / SR
    x = torch.from_numpy(0.5 * np.cos(2 * np.pi * 1234.5 * t + 0.7)).float()
    p = atoms_fit.residual_peaks(x, SR, 5, window=0.064)
    strongest = int(torch.argmax(p["amplitude"]))
    assert float(p["frequency"][strongest]) == pytest.approx(1234.5, abs=2.0)
    # the phase is referred to the atom's centre: compare with the cosine's phase there
    c = float(p["centre"][strongest])
    expected = (2 * np.pi * 1234.5 * c + 0.7 + np.pi) % (2 * np.pi) - np.pi
    diff = np.angle(np.exp(1j * (float(p["phase"][strongest]) - expected)))
    assert abs(diff) < 0.2


@pytest.mark.parametrize("method", atoms_fit.INIT_METHODS)
def test_initial_params(method):
    x = tone()
    p = atoms_fit.initial_params(x, SR, 30, method, seed=1)
    assert set(p) == set(GaborAtoms(1).params())
    assert all(v.shape == (30,) for v in p.values())
    assert float(p["frequency"].min()) >= 0 and float(p["frequency"].max()) <= SR / 2
    assert float(p["centre"].min()) >= 0 and float(p["centre"].max()) <= x.shape[1] / SR
    assert bool((p["width"] > 0).all())
    with pytest.raises(LabkitError, match="init method"):
        atoms_fit.initial_params(x, SR, 3, "magic")


def test_losses():
    x = torch.from_numpy(tone()[0])
    zero = torch.zeros_like(x)
    assert float(atoms_fit.loss_fn(zero, x, SR, "l2")) == pytest.approx(1.0)
    assert float(atoms_fit.loss_fn(zero, x, SR, "l1")) == pytest.approx(1.0)
    assert float(atoms_fit.loss_fn(x, x, SR, "spectral")) == pytest.approx(0.0, abs=1e-6)
    half = 0.5 * x
    l2 = float(atoms_fit.loss_fn(half, x, SR, "l2"))
    spectral = float(atoms_fit.spectral_loss(half, x, SR))
    assert l2 == pytest.approx(0.25)
    assert float(atoms_fit.loss_fn(half, x, SR, "l2", mix=0.3)) == pytest.approx(
        0.7 * l2 + 0.3 * spectral, rel=1e-5)
    assert float(atoms_fit.loss_fn(half, x, SR, "spectral", mix=1.0)) == pytest.approx(l2)


def test_config_validation_and_presets():
    with pytest.raises(LabkitError, match="loss='l3'"):
        atoms_fit.FitConfig(loss="l3")
    with pytest.raises(LabkitError, match="unknown setting"):
        atoms_fit.FitConfig.from_dict({"atoms": 5})
    with pytest.raises(LabkitError, match="preset 'opera'"):
        atoms_fit.preset("opera")
    config = atoms_fit.preset("speech", steps=10, grow_at=[2, 5])
    assert config.grow_at == (2, 5) and config.steps == 10
    assert atoms_fit.FitConfig.from_dict(config.to_dict()) == config


def test_fit_improves_and_is_reproducible():
    x = tone()
    result = atoms_fit.fit(x, SR, n_atoms=48, steps=60, progress=False)
    history = result.history
    assert len(history["snr"]) == 60
    assert history["snr"][-1] > history["snr"][0] + 10
    assert history["snr"][-1] > 25
    y = result.model().detach().numpy()
    assert metrics.snr(x, y) == pytest.approx(history["snr"][-1], abs=0.5)
    again = atoms_fit.fit(x, SR, n_atoms=48, steps=60, progress=False)
    torch.testing.assert_close(again.model.amplitude, result.model.amplitude)


def test_growth_and_pruning():
    x = tone()
    result = atoms_fit.fit(x, SR, n_atoms=10, steps=12, grow_at=[4, 8], grow_by=5,
                           progress=False)
    assert result.history["grow_steps"] == [4, 8]
    assert result.history["n_atoms"][3] == 10 and result.history["n_atoms"][-1] == 20
    # pruning: atoms with no energy go at the next growth step
    start = atoms_fit.fit(x, SR, n_atoms=10, steps=0, progress=False).model
    with torch.no_grad():
        start.amplitude[:4] = 0
    pruned = atoms_fit.fit(x, SR, steps=3, grow_at=[1], grow_by=0, prune_below=0.01,
                           model=start, progress=False)
    assert pruned.model.n_atoms == 6


def test_refit_quantized_never_loses_to_plain_quantization():
    x = tone()
    model = atoms_fit.fit(x, SR, n_atoms=30, steps=40, progress=False).model
    bits = {"centre": 8, "width": 4, "frequency": 9, "amplitude": 4, "phase": 4}
    plain = codec.codec_stats(x, codec.encode(model.params(), SR, x.shape[1], bits))
    params, ranges = atoms_fit.refit_quantized(model, x, bits, steps=30)
    data = codec.encode(params, SR, x.shape[1], bits, ranges)
    decoded, _, _ = codec.decode(data)
    for name in params:  # the file stores exactly the refitted grid values
        torch.testing.assert_close(decoded[name], params[name], atol=1e-5, rtol=1e-5)
    assert codec.codec_stats(x, data)["snr"] >= plain["snr"] - 1e-6


# --------------------------------------------------------------------------- runs and CLI
@pytest.fixture()
def clip(tmp_path):
    path = tmp_path / "tone.wav"
    audio_io.save(path, tone(0.4), SR)
    return path


def test_fit_file_writes_a_run_folder(clip, tmp_path):
    config = atoms_fit.FitConfig(n_atoms=16, steps=20, grow_at=(10,), grow_by=4)
    stats = runs.fit_file(clip, tmp_path / "run", config, bits=8, checkpoint_every=10,
                          progress=False)
    run = tmp_path / "run"
    for name in ("log.txt", "config.yaml", "atoms.lkat", "reconstructed.wav", "atoms.png",
                 "metrics.json", "final.pt", "checkpoints/step_0000010.pt",
                 "checkpoints/step_0000020.pt"):
        assert (run / name).is_file(), name
    data = (run / "atoms.lkat").read_bytes()
    assert stats["bytes"] == len(data) and stats["n_atoms"] == 20
    decoded, _ = audio_io.load(run / "reconstructed.wav")
    np.testing.assert_allclose(decoded, codec.decode_audio(data)[0], atol=1e-6)
    assert json.loads((run / "metrics.json").read_text())["snr"] == pytest.approx(stats["snr"])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["fit"]["n_atoms"] == 16 and saved["codec"]["bits"] == 8
    assert "step 20" in (run / "log.txt").read_text()
    # evaluation from a checkpoint: the same atoms at more bits score higher
    again = runs.evaluate_checkpoint(run / "final.pt", tmp_path / "eval", bits=12,
                                     progress=False)
    assert again["n_atoms"] == 20 and again["snr"] > stats["snr"]
    assert (tmp_path / "eval" / "reconstructed.wav").is_file()


def test_fit_folder_writes_a_summary(clip, tmp_path):
    audio_io.save(clip.parent / "second.wav", tone(0.3, (600.0,)), SR)
    summary = runs.fit_folder(clip.parent, tmp_path / "batch",
                              atoms_fit.FitConfig(n_atoms=8, steps=5), progress=False)
    rows = list(csv.DictReader(summary.open()))
    assert [r["file"] for r in rows] == ["second.wav", "tone.wav"]
    assert set(runs.SUMMARY_COLUMNS) == set(rows[0])
    assert all(float(r["kbps"]) > 0 for r in rows)


def test_cli(clip, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    runs.add_fit_atoms(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fit-atoms", str(clip), "--atoms", "12", "--steps", "6",
                              "--init", "uniform", "--loss", "spectral", "--mix", "0.5",
                              "--bits", "10", "--grow-at", "3", "--grow-by", "2",
                              "--out", str(tmp_path / "cli"), "--quiet"])
    assert args.func(args) == 0
    assert "kbit/s" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert saved["fit"]["init"] == "uniform" and saved["fit"]["grow_at"] == [3]
    assert codec.read_header((tmp_path / "cli" / "atoms.lkat").read_bytes())["bits"][
        "frequency"] == 10
    assert runs.parse_bits_option("frequency=11")["frequency"] == 11
    # registered in the labkit command line, and bad names are reported by FitConfig
    from labkit.cli import main

    assert main(["fit-atoms", str(clip), "--init", "magic", "--quiet"]) == 2
    assert "init='magic'" in capsys.readouterr().err
    with pytest.raises(LabkitError, match="--bits"):
        runs.parse_bits_option("lots")
