"""Checks for the exercises of notebook 06 (single-song fine-tuning).

06.1 is compared with :func:`labkit.finetune.time_split` and with the rules of a leakage-free
split; 06.2 is checked by what a remix must be (each stem a gained excerpt of itself, offsets and
gains drawn independently and uniformly); 06.3 runs the student's loop on a tiny spectrogram U-Net
and compares its first loss with the reference computation, then checks that the encoder, batch-norm
statistics included, did not move while the decoder did.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from labkit.grading.registry import exercise, expect


def _int_pair(value: object, what: str) -> tuple[int, int]:
    expect(isinstance(value, (tuple, list)) and len(value) == 2,
           f"{what} is {value!r}; expected a pair (start, stop)")
    try:
        start, stop = (int(v) for v in value)
    except (TypeError, ValueError):
        expect(False, f"{what} is {value!r}; expected two whole numbers (start, stop)")
    expect(all(float(v) == int(v) for v in value),
           f"{what} is {value!r}; sample positions must be whole numbers")
    return start, stop


# --------------------------------------------------------------------------- 06.1 time split
@exercise("06.1", function="split_song", timeout=60)
def check_split_song(split_song):
    """Known answers, the reference on random cases, and the errors."""
    from labkit.finetune import time_split

    out = split_song(1000, 100, 0.7, 50)
    expect(out is not None, "split_song(1000, 100, 0.7, 50) returned None; return "
                            "(train, test), each a (start, stop) pair")
    expect(isinstance(out, (tuple, list)) and len(out) == 2,
           f"split_song(1000, 100, 0.7, 50) returned {out!r}; expected (train, test)")
    train, test = (_int_pair(part, f"split_song(1000, 100, 0.7, 50)[{i}]")
                   for i, part in enumerate(out))
    expect(test == (700, 1000), f"the held-out part of split_song(1000, 100, 0.7, 50) is {test}, "
                                "expected (700, 1000): the last 30 % starts at round(0.7 * 1000)")
    expect(train == (0, 650), f"the training part of split_song(1000, 100, 0.7, 50) is {train}, "
                              "expected (0, 650): training stops guard_samples = 50 before the "
                              "held-out part")

    rng = np.random.default_rng(6)
    for _ in range(40):
        samples = int(rng.integers(2_000, 2_000_000))
        sr = int(rng.choice([8000, 22050, 44100]))
        fraction = float(rng.uniform(0.3, 0.9))
        guard = int(rng.integers(0, 500))
        what = f"split_song({samples}, {sr}, {fraction:.4f}, {guard})"
        train, test = (_int_pair(p, what) for p in split_song(samples, sr, fraction, guard))
        ref = time_split(samples, sr, fraction, guard, min_seconds=0.0)
        expect(test == ref.test, f"{what}: held-out part {test}, expected {ref.test}")
        expect(train == ref.train, f"{what}: training part {train}, expected {ref.train}")
        expect(train[1] + guard <= test[0], f"{what}: training audio reaches within {guard} "
                                            "samples of the held-out part: that leaks")

    for args, reason in (((1000, 100, 0.7, 700), "the guard leaves nothing to train on"),
                         ((1000, 100, 1.0, 0), "train_fraction=1.0 leaves nothing held out"),
                         ((1000, 100, 0.0, 0), "train_fraction=0.0 leaves nothing to train on")):
        try:
            result = split_song(*args)
        except ValueError:
            continue
        expect(False, f"split_song{args} returned {result!r}; expected a ValueError because "
                      f"{reason}")


# --------------------------------------------------------------------------- 06.2 remix
def _decompose(stem_out: np.ndarray, length: int, what: str) -> tuple[float, int]:
    """(gain, offset) of an output stem made from the ramp 1, 2, 3, ... (a ramp's slope is the
    gain, its first value / gain - 1 the offset)."""
    gain = float(stem_out[0, 1] - stem_out[0, 0])
    expect(gain > 0, f"{what}: a stem was not a scaled excerpt of its input (its samples do not "
                     "rise like the input's)")
    offset = stem_out[0, 0] / gain - 1.0
    expect(abs(offset - round(offset)) < 1e-2,
           f"{what}: a stem does not start at a whole sample of its input")
    offset = round(offset)
    reference = gain * (np.arange(offset, offset + length) + 1.0)
    expect(np.allclose(stem_out[0], reference, rtol=1e-4, atol=1e-4),
           f"{what}: a stem is not one contiguous excerpt of its input times one gain")
    return gain, offset


@exercise("06.2", function="remix", timeout=60)
def check_remix(remix):
    """Each stem a gained excerpt, independent offsets and gains in range, deterministic."""
    n, length = 300, 40
    ramp = np.arange(n, dtype=np.float32) + 1.0
    stems = np.stack([np.stack([ramp, ramp])] * 4)  # (4, 2, n)
    keep = stems.copy()
    out = remix(stems, np.random.default_rng(0), length)
    expect(out is not None, "remix returned None; did you forget the return statement?")
    out = np.asarray(out.detach() if hasattr(out, "detach") else out)
    expect(out.shape == (4, 2, length), f"remix(stems of shape (4, 2, {n}), rng, {length}) has "
                                        f"shape {out.shape}, expected (4, 2, {length})")
    expect(np.array_equal(stems, keep), "remix changed its input stems; work on copies")
    again = np.asarray(remix(stems, np.random.default_rng(0), length))
    expect(np.array_equal(out, again), "two calls with generators of the same seed gave different "
                                       "results; draw every random number from rng")
    offsets, gains_db = [], []
    for seed in range(150):
        result = np.asarray(remix(stems, np.random.default_rng(seed), length, -6.0, 3.0))
        row = []
        for k in range(4):
            what = f"remix(..., rng seed {seed}), stem {k}"
            expect(np.allclose(result[k, 0], result[k, 1], rtol=1e-5, atol=1e-5),
                   f"{what}: the two channels differ; cut both channels of a stem at the same "
                   "offset")
            gain, offset = _decompose(result[k], length, what)
            gains_db.append(20 * np.log10(gain))
            row.append(offset)
        offsets.append(row)
    offsets = np.array(offsets)
    expect(offsets.min() >= 0 and offsets.max() <= n - length,
           f"offsets range from {offsets.min()} to {offsets.max()}, expected 0 to {n - length}")
    expect(offsets.max() >= n - length - 30 and offsets.min() <= 30,
           f"offsets only range from {offsets.min()} to {offsets.max()}; every start from 0 to "
           f"{n - length} should be possible")
    same = float(np.mean([len(set(r)) == 1 for r in offsets]))
    expect(same < 0.1, f"in {same:.0%} of the draws all four stems start at the same offset: each "
                       "stem needs its own random offset (that is what makes a new mixture)")
    gains_db = np.array(gains_db)
    expect(gains_db.min() >= -6.0 - 1e-3 and gains_db.max() <= 3.0 + 1e-3,
           f"gains range from {gains_db.min():.2f} to {gains_db.max():.2f} dB, expected within "
           "[low_db, high_db] = [-6, 3] dB")
    expect(gains_db.max() - gains_db.min() > 6.0,
           f"gains only range from {gains_db.min():.2f} to {gains_db.max():.2f} dB; draw them "
           "uniformly in dB from [low_db, high_db)")
    spread = np.ptp(np.array(gains_db).reshape(-1, 4), axis=1)
    expect(np.mean(spread < 1e-6) < 0.1, "all four stems got the same gain; draw one gain per "
                                         "stem")


# --------------------------------------------------------------------------- 06.3 the loop
def _tiny_model():
    from labkit.models.spec_unet import SpecUNet, SpecUNetSeparator

    torch.manual_seed(0)
    unet = SpecUNet(levels=2, base_channels=4, kernel_size=3, norm="batch", log_input=True)
    return SpecUNetSeparator.from_unet(unet, sample_rate=8000, n_fft=256, hop_length=64,
                                       chunk_frames=32)


def _batches(count: int = 3, batch: int = 4, samples: int = 2048):
    rng = np.random.default_rng(3)
    t = np.arange(samples) / 8000
    out = []
    for _ in range(count):
        vocals = np.stack([0.3 * np.sin(2 * np.pi * rng.uniform(300, 600) * t)
                           for _ in range(batch)])[:, None]
        rest = 0.1 * rng.standard_normal((batch, 1, samples))
        out.append((torch.tensor(vocals + rest, dtype=torch.float32),
                    torch.tensor(vocals, dtype=torch.float32)))
    return out


def _reference_loss(model, mixture, vocals):
    from labkit.models.spec_unet import masked_l1_loss

    spec = model.spectrogram(mixture).abs()
    return masked_l1_loss(model.unet(spec), spec, model.spectrogram(vocals).abs())


@exercise("06.3", function="finetune_decoder", timeout=120)
def check_finetune_decoder(finetune_decoder):
    """Losses returned, the first equal to the reference, encoder and its statistics unchanged,
    the decoder trained, the loss going down."""
    model = _tiny_model()
    batches = _batches()
    start = copy.deepcopy(model.state_dict())
    reference = copy.deepcopy(model)
    reference.train()
    reference.unet.encoder.eval()
    with torch.no_grad():
        first = float(_reference_loss(reference, *batches[0]))
    losses = finetune_decoder(model, batches, 12, 1e-2)
    expect(losses is not None, "finetune_decoder returned None; return the list of losses")
    losses = [float(v) for v in losses]
    expect(len(losses) == 12, f"finetune_decoder(model, batches, 12, 1e-2) returned {len(losses)} "
                              "losses, expected 12 (one per step)")
    expect(all(np.isfinite(losses)), f"some losses are not finite: {losses}")
    expect(abs(losses[0] - first) < 1e-4 * max(1.0, abs(first)),
           f"the first loss is {losses[0]:.6f}, expected {first:.6f}: the masked L1 loss "
           "masked_l1_loss(model.unet(|X|), |X|, |V|) of the first batch, with the model in "
           "train mode and its encoder in eval mode")
    state = model.state_dict()
    for key, value in start.items():
        if key.startswith("unet.encoder."):
            expect(torch.equal(value, state[key]),
                   f"{key} changed: the encoder must stay as it was (freeze its parameters and "
                   "keep it in eval mode, so that batch norm does not update its statistics)")
    for name, parameter in model.unet.encoder.named_parameters():
        expect(not parameter.requires_grad,
               f"unet.encoder.{name} still has requires_grad=True; freeze the encoder")
    moved = [k for k in start if not k.startswith("unet.encoder.")
             and start[k].is_floating_point() and not torch.equal(start[k], state[k])]
    expect(moved, "no decoder weight changed: train the parameters outside the encoder")
    expect(np.mean(losses[-3:]) < losses[0],
           f"the loss did not go down ({losses[0]:.4f} at the start, {np.mean(losses[-3:]):.4f} "
           "over the last three steps)")
