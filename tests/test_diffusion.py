"""Diffusion pieces: schedules, the forward process, samplers, guidance, the denoiser, inspector."""
import math

import numpy as np
import pytest
import torch

from labkit.checkpoint import load_model, save_checkpoint
from labkit.errors import LabkitError
from labkit.models import build_model, model_config
from labkit.models.diffusion import (
    NoiseSchedule,
    SpectralDenoiser,
    SuperResDiffusion,
    alpha_bar_schedule,
    apply_guidance,
    cosine_alpha_bar,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    gaussian_mixture_eps,
    inspect_model,
    linear_alpha_bar,
    q_sample,
    receptive_field,
    to_x0_eps,
    training_target,
)


def tiny_model(**kw):
    settings = {"n_fft": 256, "hop_length": 64, "channels": 8, "dilations": [1, 2],
                "repeats": 1, "embed_dim": 8, "timesteps": 50}
    settings.update(kw)
    return SuperResDiffusion(**settings)


# --------------------------------------------------------------------------- schedules
def test_linear_schedule_is_the_ddpm_one():
    expected = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(linear_alpha_bar(1000).numpy(), expected, rtol=1e-12)
    # shorter chains scale the betas so that they still end near pure noise
    assert linear_alpha_bar(100)[-1] < 1e-4


def test_cosine_schedule_matches_its_formula():
    T, s = 1000, 0.008
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    abar = f[1:] / f[0]
    ours = cosine_alpha_bar(T).numpy()
    # identical until the beta clipping at 0.999 bites at the very end
    np.testing.assert_allclose(ours[:-2], abar[:-2], rtol=1e-10)
    assert np.all(np.diff(ours) < 0) and 0 < ours[-1] < 1e-6 and ours[0] > 0.9999
    betas = 1 - ours / np.concatenate([[1.0], ours[:-1]])
    assert betas.max() <= 0.999 + 1e-12


def test_schedule_errors_name_the_value():
    with pytest.raises(LabkitError, match="schedule='square'"):
        alpha_bar_schedule("square", 10)
    with pytest.raises(LabkitError, match="timesteps=1"):
        NoiseSchedule("cosine", 1)
    with pytest.raises(LabkitError, match="steps=0"):
        ddim_timesteps(100, 0)


def test_noise_schedule_posterior_variance_and_snr():
    schedule = NoiseSchedule("linear", 100)
    t = 40
    abar, abar_prev = schedule.alpha_bar[t], schedule.alpha_bar[t - 1]
    beta = 1 - abar / abar_prev
    assert math.isclose(schedule.posterior_variance[t], beta * (1 - abar_prev) / (1 - abar),
                        rel_tol=1e-12)
    assert math.isclose(schedule.snr(t), abar / (1 - abar), rel_tol=1e-12)
    assert schedule.posterior_variance[0] == 0


def test_ddim_timesteps_span_the_chain():
    assert ddim_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    assert ddim_timesteps(1000, 1) == [999]


# --------------------------------------------------------------------------- forward process
def test_q_sample_known_values_and_per_example_alpha_bar():
    x0 = torch.tensor([[2.0, -1.0], [1.0, 1.0]])
    noise = torch.tensor([[1.0, 1.0], [0.0, -2.0]])
    out = q_sample(x0, torch.tensor([0.64, 0.36]), noise)
    expected = torch.tensor([[0.8 * 2 + 0.6, 0.8 * -1 + 0.6], [0.6, 0.6 - 0.8 * 2]])
    torch.testing.assert_close(out, expected)
    # statistics: mean sqrt(abar) x0, variance 1 - abar
    g = torch.Generator().manual_seed(0)
    draws = q_sample(torch.full((200_000,), 3.0), 0.25, torch.randn(200_000, generator=g))
    assert abs(draws.mean() - 1.5) < 0.01 and abs(draws.var() - 0.75) < 0.01


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_targets_and_conversions_invert_each_other(prediction):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 1, 5, 7, generator=g, dtype=torch.float64), torch.randn(
        4, 1, 5, 7, generator=g, dtype=torch.float64)
    abar = torch.tensor([0.99, 0.5, 0.1, 1e-3], dtype=torch.float64)
    x_t = q_sample(x0, abar, noise)
    target = training_target(x0, noise, abar, prediction)
    x0_hat, eps_hat = to_x0_eps(x_t, target, abar, prediction)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, noise)


def test_unknown_prediction_is_an_error():
    x = torch.zeros(1, 2)
    with pytest.raises(LabkitError, match="prediction='x0'"):
        training_target(x, x, 0.5, "x0")
    with pytest.raises(LabkitError, match="prediction='x0'"):
        tiny_model(prediction="x0")


# --------------------------------------------------------------------------- samplers
def test_ddim_step_with_the_true_noise_moves_along_the_same_path():
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(3, 10, generator=g), torch.randn(3, 10, generator=g)
    x_t = q_sample(x0, 0.3, noise)
    torch.testing.assert_close(ddim_step(x_t, noise, 0.3, 0.8), q_sample(x0, 0.8, noise))
    # the last step (abar_prev = 1) lands on x0 itself
    torch.testing.assert_close(ddim_step(x_t, noise, 0.3, 1.0), x0)


def test_ddim_with_eta_one_on_every_step_is_ddpm():
    schedule = NoiseSchedule("cosine", 40)
    x_T = torch.randn(2, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def model_fn(x, t):  # any fixed function will do: both samplers must agree on it
        return 0.3 * x + 0.01 * t[:, None].to(x.dtype)

    ddim = ddim_sample(model_fn, x_T, schedule, steps=40, prediction="eps", eta=1.0,
                       generator=torch.Generator().manual_seed(4))
    ddpm = ddpm_sample(model_fn, x_T, schedule, prediction="eps",
                       generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_samplers_draw_from_a_gaussian_with_its_exact_denoiser(method):
    # data ~ N(mu, s^2): the optimal eps prediction is known in closed form
    mu, s = 2.0, 0.5
    schedule = NoiseSchedule("cosine", 100)

    def model_fn(x, t):
        abar = schedule.at(t, x)[:, None]
        return (1 - abar).sqrt() * (x - abar.sqrt() * mu) / (abar * s**2 + 1 - abar)

    x_T = torch.randn(3000, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    if method == "ddim":
        samples = ddim_sample(model_fn, x_T, schedule, steps=100, prediction="eps")
        # coarser DDIM discretisations shrink the spread (10 steps: about 15 % too narrow)
        coarse = float(ddim_sample(model_fn, x_T, schedule, steps=10, prediction="eps").std())
        assert coarse < 0.9 * s < float(samples.std())
    else:
        samples = ddpm_sample(model_fn, x_T, schedule, prediction="eps",
                              generator=torch.Generator().manual_seed(6))
    assert abs(float(samples.mean()) - mu) < 0.03
    assert abs(float(samples.std()) - s) < 0.03


def test_gaussian_mixture_eps_is_minus_scaled_score():
    means, std = torch.tensor([[-1.0, 0.5], [2.0, -1.0]], dtype=torch.float64), 0.4
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    abar = torch.tensor([0.2, 0.9], dtype=torch.float64)
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64,
                    requires_grad=True)
    variance = abar[:, None, None] * std**2 + 1 - abar[:, None, None]
    centres = abar.sqrt()[:, None, None] * means[None]
    log_p = torch.logsumexp(torch.log(weights)[None] - 0.5 * ((x[:, None] - centres) ** 2
                            / variance).sum(-1) - torch.log(variance[..., 0]), dim=1).sum()
    (score,) = torch.autograd.grad(log_p, x)
    expected = -(1 - abar[:, None]).sqrt() * score
    torch.testing.assert_close(gaussian_mixture_eps(x.detach(), abar, means, std, weights),
                               expected)


def test_guidance_mixes_the_predictions():
    cond, uncond = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(apply_guidance(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(apply_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(apply_guidance(cond, uncond, 2.0), torch.tensor([2.0, 5.0]))


# --------------------------------------------------------------------------- denoiser
def random_denoiser(**kw):
    torch.manual_seed(0)
    net = SpectralDenoiser(12, 5, channels=16, embed_dim=8, **kw)
    with torch.no_grad():  # the output layer starts at zero; make every path visible
        net.output.weight.normal_(0, 0.1)
        net.null_condition.normal_()
        for block in net.blocks:
            block.mix.weight.normal_(0, 0.1)
    return net


def test_denoiser_shapes_and_zero_start():
    net = SpectralDenoiser(12, 5, channels=16, embed_dim=8)
    x = torch.randn(3, 1, 12, 20)
    out = net(x, torch.tensor([0, 10, 999]), torch.randn(3, 1, 5, 20))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0
    with pytest.raises(LabkitError, match=r"expected \(batch, 1, 12, frames\)"):
        net(torch.randn(3, 1, 11, 20), torch.zeros(3, dtype=torch.long))
    with pytest.raises(LabkitError, match=r"expected \(3, 1, 5, 20\)"):
        net(x, torch.zeros(3, dtype=torch.long), torch.randn(3, 1, 5, 19))


def test_dropped_condition_is_the_null_condition():
    net = random_denoiser()
    x, t = torch.randn(2, 1, 12, 9), torch.tensor([5, 500])
    cond = torch.randn(2, 1, 5, 9)
    unconditional = net(x, t, None)
    dropped = net(x, t, cond, drop=torch.tensor([True, False]))
    torch.testing.assert_close(dropped[0], unconditional[0])
    assert not torch.allclose(dropped[1], unconditional[1])
    torch.testing.assert_close(dropped[1], net(x, t, cond)[1])


def test_receptive_field_is_local_and_as_designed():
    net = random_denoiser(dilations=(1, 2, 4), repeats=2).eval()
    # each block with kernel 3 and dilation d widens the field by 2 d frames
    expected = 1 + 2 * 2 * (1 + 2 + 4)
    assert receptive_field(net, lambda m, x: m(x, torch.tensor([3]),
                                               torch.zeros(1, 1, 5, x.shape[-1])),
                           (1, 1, 12, 101)) == expected
    # a change outside the field leaves the middle frame alone: chunks match whole signals
    x = torch.randn(1, 1, 12, 101)
    y = x.clone()
    y[..., : 50 - expected // 2] += 1.0
    t, c = torch.tensor([3]), torch.zeros(1, 1, 5, 101)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, c)[..., 50], net(y, t, c)[..., 50])
        y[..., 50 - expected // 2] += 1.0
        assert not torch.allclose(net(x, t, c)[..., 50], net(y, t, c)[..., 50])


def test_inspector_counts_parameters_and_measures_the_field():
    model = tiny_model(dilations=[1, 2, 4], repeats=1)
    report = inspect_model(model, frames=65)
    assert report.total_parameters == sum(p.numel() for p in model.parameters())
    block_rows = [r for r in report.rows if r["block"].startswith("block")]
    assert [r["receptive_field"] for r in block_rows] == [3, 7, 15]
    assert report.receptive_field == 15
    assert math.isclose(report.frame_seconds, 64 / 44100)
    text = str(report)
    assert "block2" in text and f"{report.total_parameters:,}" in text
    with pytest.raises(LabkitError, match="expected a SuperResDiffusion"):
        inspect_model(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------- the model
def test_model_features_bands_and_inverse():
    model = tiny_model()
    assert model.gen_start == math.floor(4000 * 256 / 44100)
    assert model.cond_stop == math.ceil(7500 * 256 / 44100) + 1
    audio = torch.randn(2, 4410)
    gen, cond = model.features(audio)
    frames = 1 + 4410 // 64
    assert gen.shape == (2, 1, 129 - model.gen_start, frames)
    assert cond.shape == (2, 1, model.cond_stop, frames)
    magnitude = model.stft(audio).abs()
    torch.testing.assert_close(model.from_features(model.to_features(magnitude)), magnitude,
                               rtol=1e-4, atol=1e-4)


def test_model_loss_sample_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_model()
    gen, cond = model.features(torch.randn(3, 2205))
    loss = model.loss(gen, cond, cond_dropout=0.5)
    assert loss.ndim == 0 and loss.requires_grad
    loss.backward()
    assert model.denoiser.output.weight.grad.abs().sum() > 0
    out1 = model.sample(cond, steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    out2 = model.sample(cond, steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    assert out1.shape == gen.shape and torch.equal(out1, out2) and torch.isfinite(out1).all()

    config = model_config(model)
    assert config["name"] == "superres_diffusion" and config["timesteps"] == 50
    assert isinstance(build_model(config), SuperResDiffusion)
    save_checkpoint(tmp_path / "m.pt", model=model, step=1)
    loaded = load_model(tmp_path / "m.pt", expected_model="superres_diffusion")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_model_rejects_inconsistent_bands():
    with pytest.raises(LabkitError, match="gen_low_hz"):
        tiny_model(gen_low_hz=8000.0, cond_high_hz=7000.0)
