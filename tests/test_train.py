"""The Trainer (labkit.train): losses, checkpoints, exact resume, stopping, schedules."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import helpers_train
import pytest
import torch
from helpers_train import LinearRegressor, NoisyMLP, batches, build_run, regression_data
from torch import nn
from torch.nn import functional as F

import labkit.train as train_module
from labkit.checkpoint import load_checkpoint, load_model
from labkit.errors import CheckpointError, LabkitError
from labkit.train import History, NonFiniteLossError, Trainer, evaluate_loss

HELPER = Path(helpers_train.__file__)


def _linear_trainer(workdir, max_steps=60, seed=0, val_data=None, **options) -> Trainer:
    torch.manual_seed(seed)
    model = LinearRegressor()
    data = batches(*regression_data(n=64), batch_size=16)
    options = {"lr": 0.05, "progress": False, "tensorboard": False, **options}
    return Trainer(model, data, F.mse_loss, val_data, workdir=workdir, max_steps=max_steps,
                   device="cpu", **options)


def _weights(model_or_state) -> dict[str, torch.Tensor]:
    state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
    return {key: value.detach().clone() for key, value in state.items()}


def _assert_same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _without_time(history) -> dict:
    return {key: value for key, value in history.items() if key != "time"}


# ----------------------------------------------------------------------------- basics
def test_loss_decreases_and_history_is_saved(tmp_path):
    trainer = _linear_trainer(tmp_path, max_steps=80)
    history = trainer.fit()
    assert isinstance(history, History) and history is trainer.history
    assert history["step"] == list(range(10, 81, 10))
    assert history["train_loss"][-1] < 0.05 * history["train_loss"][0]
    assert all(len(history[key]) == 8 for key in ("epoch", "train_loss", "lr", "time"))
    # 4 batches per epoch: after steps 10, 20 and 30, 2, 4 and 7 epochs were complete
    assert history["epoch"][:3] == [2, 4, 7]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved == dict(history)
    assert History.load(tmp_path / "history.json") == history


def test_checkpoints_best_final_and_manifest(tmp_path):
    trainer = _linear_trainer(tmp_path, max_steps=50, ckpt_every=10, val_every=10,
                              keep_checkpoints=3, seed=3,
                              val_data=batches(*regression_data(n=16, seed=1), 8))
    history = trainer.fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000030.pt", "step_0000040.pt", "step_0000050.pt"]
    for path in [*(tmp_path / "checkpoints").iterdir(), tmp_path / "best.pt",
                 tmp_path / "final.pt"]:
        raw = torch.load(path, weights_only=True)  # plain torch, weights only
        assert raw["labkit_checkpoint"] == 1 and raw["model_name"] == "test_linear"
    final = load_checkpoint(tmp_path / "final.pt", expected_model="test_linear")
    assert final["step"] == 50 and final["extra"]["history"] == dict(history)
    _assert_same_weights(final["model"], trainer.model)
    best = load_checkpoint(tmp_path / "best.pt")
    best_index = history["val_loss"].index(min(history["val_loss"]))
    assert best["step"] == history["val_step"][best_index]
    rebuilt = load_model(tmp_path / "best.pt")
    assert evaluate_loss(rebuilt, trainer.val_data, F.mse_loss) == pytest.approx(
        min(history["val_loss"]), rel=1e-6)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["model"] == {"name": "test_linear", "n_in": 4,
                                                         "n_out": 1}
    assert manifest["trainer"]["max_steps"] == 50 and manifest["trainer"]["loss_fn"] == "mse_loss"
    assert final["manifest"]["torch"] == torch.__version__


def test_epochs_and_validation_once_per_epoch(tmp_path):
    validations = []
    trainer = _linear_trainer(tmp_path, max_steps=None, epochs=3, log_every=100,
                              val_data=batches(*regression_data(n=8, seed=2), 8),
                              callbacks=[lambda t, event, info: validations.append(info)
                                         if event == "validate" else None])
    history = trainer.fit()
    assert trainer.step == 12 and trainer.epoch == 3
    assert history["val_step"] == [4, 8, 12]
    assert [v["epoch"] for v in validations] == [1, 2, 3]
    assert history["step"] == [12]  # the end logs the partial window


def test_set_epoch_is_called_on_the_data_each_epoch(tmp_path):
    seen = []

    class EpochData(list):
        def set_epoch(self, epoch):
            seen.append(epoch)

    data = EpochData(batches(*regression_data(n=32), 16))
    Trainer(LinearRegressor(), data, F.mse_loss, workdir=tmp_path, epochs=3, device="cpu",
            progress=False, tensorboard=False).fit()
    assert seen == [0, 1, 2]


# ----------------------------------------------------------------------------- resume
def test_resume_auto_of_a_finished_run_does_nothing(tmp_path):
    _linear_trainer(tmp_path, max_steps=20, ckpt_every=10).fit()
    final = tmp_path / "final.pt"
    stamp = final.stat().st_mtime_ns
    history = json.loads((tmp_path / "history.json").read_text())
    events = []
    trainer = _linear_trainer(tmp_path, max_steps=20, ckpt_every=10, resume="auto",
                              callbacks=[lambda t, event, info: events.append((event, info))])
    assert trainer.resumed_from == final and trainer.step == 20
    assert trainer.fit() == history
    assert final.stat().st_mtime_ns == stamp
    assert events == [("end", {"step": 20, "epoch": 5, "reason": "max_steps",
                               "best_val_loss": None})]


def test_resume_auto_continues_to_a_higher_max_steps(tmp_path):
    _linear_trainer(tmp_path, max_steps=20).fit()
    trainer = _linear_trainer(tmp_path, max_steps=30, resume="auto")
    history = trainer.fit()
    assert trainer.step == 30 and history["step"] == [10, 20, 30]
    assert load_checkpoint(tmp_path / "final.pt")["step"] == 30


def test_stop_and_resume_matches_an_uninterrupted_run(tmp_path):
    # shuffled DataLoader, dropout and noise in the step: every random source must be restored
    reference = build_run(tmp_path / "ref", max_steps=30, ckpt_every=None)
    reference.fit()

    def stop_at_12(trainer, event, info):
        if event == "log" and info["step"] == 12:
            trainer.request_stop()  # from a callback: returns after the current step

    first = build_run(tmp_path / "run", max_steps=30, ckpt_every=None, callbacks=[stop_at_12])
    first.fit()
    assert first.step == 12 and not (tmp_path / "run" / "final.pt").exists()
    assert (tmp_path / "run" / "checkpoints" / "step_0000012.pt").is_file()

    resumed = build_run(tmp_path / "run", max_steps=30, ckpt_every=None, resume="auto")
    assert resumed.step == 12 and resumed.batch_in_epoch == 4
    history = resumed.fit()
    assert resumed.step == 30
    _assert_same_weights(resumed.model, reference.model)
    assert _without_time(history) == _without_time(reference.history)


class _Stream:
    """Re-iterable batches without a len(): the trainer learns the epoch length by running out."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def test_data_without_len_stop_and_resume(tmp_path):
    data = _Stream(batches(*regression_data(n=64), 16))
    val = batches(*regression_data(n=8, seed=2), 8)

    def run(workdir, callbacks=(), resume=None):
        torch.manual_seed(0)
        trainer = Trainer(NoisyMLP(), data, F.mse_loss, val, workdir=workdir, epochs=3,
                          log_every=3, device="cpu", progress=False, tensorboard=False,
                          callbacks=callbacks, resume=resume)
        trainer.fit()
        return trainer

    reference = run(tmp_path / "ref")
    assert reference.steps_per_epoch is None and reference.step == 12
    assert reference.history["val_step"] == [4, 8, 12]  # validated as each epoch ran out
    stopped = run(tmp_path / "run", [lambda t, e, i: t.request_stop() if e == "log" else None])
    assert stopped.step == 3
    resumed = run(tmp_path / "run", resume="auto")
    assert resumed.step == 12 and resumed.epoch == 3
    _assert_same_weights(resumed.model, reference.model)
    assert _without_time(resumed.history) == _without_time(reference.history)


def test_fit_again_after_a_stop_continues(tmp_path):
    trainer = _linear_trainer(tmp_path, max_steps=20, log_every=1,
                              callbacks=[lambda t, e, i: t.request_stop() if i.get("step") == 7
                                         and e == "log" else None])
    trainer.fit()
    assert trainer.step == 7 and (tmp_path / "checkpoints" / "step_0000007.pt").is_file()
    trainer.callbacks.clear()
    trainer.fit()
    assert trainer.step == 20 and trainer.history["step"] == list(range(1, 21))
    reference = _linear_trainer(tmp_path / "ref", max_steps=20, log_every=1)
    reference.fit()
    _assert_same_weights(trainer.model, reference.model)


def test_keyboard_interrupt_returns_with_a_checkpoint(tmp_path):
    calls = {"n": 0}

    def step(model, batch, device):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return F.mse_loss(model(batch[0]), batch[1])

    trainer = Trainer(LinearRegressor(), batches(*regression_data(), 16), step_fn=step,
                      workdir=tmp_path, max_steps=20, device="cpu", progress=False,
                      tensorboard=False)
    trainer.fit()  # does not raise
    assert trainer.step == 5
    assert load_checkpoint(tmp_path / "checkpoints" / "step_0000005.pt")["step"] == 5


@pytest.mark.slow  # two Python processes that import torch: ~10 s
@pytest.mark.timeout(120)
def test_sigkill_mid_run_resumes_to_the_same_end(tmp_path):
    python, common = sys.executable, ["--max-steps", "30", "--ckpt-every", "5"]
    run = tmp_path / "run"
    process = subprocess.Popen([python, str(HELPER), str(run), *common, "--sleep", "0.05"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list((run / "checkpoints").glob("step_*.pt")):
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        time.sleep(0.12)  # a couple of steps past the checkpoint
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (run / "final.pt").exists(), "the run finished before it was killed"

    done = subprocess.run([python, str(HELPER), str(run), *common, "--resume", "auto"],
                          check=True, capture_output=True, text=True, timeout=60)
    assert "finished at step 30" in done.stdout
    resumed = load_checkpoint(run / "final.pt")
    assert resumed["step"] == 30
    assert resumed["manifest"]["resumed_from"].startswith(str(run / "checkpoints"))

    # the uninterrupted reference, in this process with the script's single thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = build_run(tmp_path / "ref", max_steps=30, ckpt_every=5)
        reference.fit()
    finally:
        torch.set_num_threads(threads)
    # deterministic data order and restored RNG streams: the same weights, bit for bit
    _assert_same_weights(resumed["model"], reference.model)
    assert _without_time(resumed["extra"]["history"]) == _without_time(reference.history)


def test_new_run_refuses_a_workdir_with_a_run(tmp_path):
    _linear_trainer(tmp_path, max_steps=5).fit()
    with pytest.raises(CheckpointError, match=r"already holds a training run \(final\.pt\)"
                                              r".*resume='auto'.*overwrite=True"):
        _linear_trainer(tmp_path, max_steps=5)
    with pytest.warns(UserWarning, match="deletes the earlier run's final.pt"):
        trainer = _linear_trainer(tmp_path, max_steps=3, overwrite=True)
    assert not (tmp_path / "final.pt").exists() and trainer.step == 0
    with pytest.raises(LabkitError, match="give one of them"):
        _linear_trainer(tmp_path, max_steps=3, overwrite=True, resume="auto")


def test_resume_with_another_model_is_refused(tmp_path):
    _linear_trainer(tmp_path, max_steps=5).fit()
    with pytest.raises(CheckpointError, match=r"checkpoint of model 'test_linear', not 'test_mlp'"):
        Trainer(NoisyMLP(), batches(*regression_data(), 16), F.mse_loss, workdir=tmp_path,
                max_steps=5, device="cpu", progress=False, resume="auto")
    with pytest.raises(CheckpointError, match=r"config .*'n_out': 1.*'n_out': 2"):
        Trainer(LinearRegressor(n_out=2), batches(*regression_data(), 16), F.mse_loss,
                workdir=tmp_path, max_steps=5, device="cpu", progress=False, resume="auto")


def test_resume_auto_refuses_when_no_checkpoint_loads(tmp_path):
    _linear_trainer(tmp_path, max_steps=5).fit()
    (tmp_path / "final.pt").write_bytes(b"PK\x03\x04 damaged")
    with pytest.warns(UserWarning, match="skipping"), \
            pytest.raises(CheckpointError, match=r"holds checkpoints \(final\.pt\) but none"):
        _linear_trainer(tmp_path, max_steps=5, resume="auto")


# ----------------------------------------------------------------------------- stopping
def _constant_validation_step(model, batch, device):
    """Trains normally; in eval mode the loss is a constant, so validation never improves."""
    x, y = batch
    if not model.training:
        return torch.tensor(1.0)
    return F.mse_loss(model(x), y)


def test_early_stopping_after_patience_validations(tmp_path):
    data = batches(*regression_data(), 16)
    trainer = Trainer(LinearRegressor(), data, None, data, step_fn=_constant_validation_step,
                      workdir=tmp_path, max_steps=100, val_every=2, early_stopping_patience=3,
                      device="cpu", progress=False, tensorboard=False)
    ends = []
    trainer.callbacks.append(lambda t, e, i: ends.append(i["reason"]) if e == "end" else None)
    history = trainer.fit()
    # the first validation sets the best; three more without improvement stop the run
    assert trainer.step == 8 and history["val_step"] == [2, 4, 6, 8] and ends == ["early_stopping"]
    assert load_checkpoint(tmp_path / "final.pt")["step"] == 8
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 2
    again = Trainer(LinearRegressor(), data, None, data, step_fn=_constant_validation_step,
                    workdir=tmp_path, max_steps=100, val_every=2, early_stopping_patience=3,
                    device="cpu", progress=False, tensorboard=False, resume="auto")
    assert again.fit()["val_step"] == [2, 4, 6, 8] and again.step == 8


def test_non_finite_loss_stops_with_the_step_and_keeps_checkpoints(tmp_path):
    def step(model, batch, device):
        loss = F.mse_loss(model(batch[0]), batch[1])
        return loss * math.nan if trainer.step + 1 == 6 else loss

    trainer = Trainer(LinearRegressor(), batches(*regression_data(), 16), step_fn=step,
                      workdir=tmp_path, max_steps=20, ckpt_every=2, log_every=1, device="cpu",
                      progress=False, tensorboard=False)
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 6 .*step_0000004\.pt"):
        trainer.fit()
    assert trainer.step == 5
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_0000002.pt", "step_0000004.pt"]
    assert not (tmp_path / "final.pt").exists()
    assert json.loads((tmp_path / "history.json").read_text())["step"] == [1, 2, 3, 4, 5]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ----------------------------------------------------------------------------- optimisation
def test_frozen_parameters_stay_unchanged(tmp_path):
    torch.manual_seed(0)
    model = NoisyMLP(dropout=0.5)
    model.encoder.requires_grad_(False)
    frozen, head = _weights(model.encoder), _weights(model.head)
    modes = []
    trainer = Trainer(model, batches(*regression_data(), 16), F.mse_loss, workdir=tmp_path,
                      max_steps=10, optimizer="adamw", weight_decay=0.5, log_every=5,
                      device="cpu", progress=False, tensorboard=False,
                      callbacks=[lambda t, e, i: modes.append(
                          (t.model.encoder[2].training, t.model.head.training))])
    assert sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"]) == 17
    trainer.fit()
    _assert_same_weights(model.encoder, frozen)
    assert not torch.equal(model.head.weight, head["weight"])
    assert modes[:2] == [(False, True), (False, True)]  # the frozen encoder's dropout is off


def test_frozen_batch_norm_keeps_its_statistics(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    model[:2].requires_grad_(False)
    statistics = _weights(model[1])
    Trainer(model, batches(*regression_data(), 16), F.mse_loss, workdir=tmp_path, max_steps=5,
            device="cpu", progress=False, tensorboard=False).fit()
    _assert_same_weights(model[1], statistics)  # running mean/var included


def test_gradient_clipping_limits_the_update(tmp_path):
    x, y = regression_data(n=16)
    data = [(x, 100 * y)]  # a huge error: the gradient norm is far above the clip value
    torch.manual_seed(0)
    model = LinearRegressor()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    grads = torch.autograd.grad(F.mse_loss(model(x), 100 * y), list(model.parameters()))
    expected_norm = torch.cat([g.flatten() for g in grads]).norm().item()
    trainer = Trainer(model, data, F.mse_loss, workdir=tmp_path, max_steps=1, optimizer="sgd",
                      lr=0.1, grad_clip=0.5, log_every=1, device="cpu", progress=False,
                      tensorboard=False)
    history = trainer.fit()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert expected_norm > 100
    assert history["grad_norm"] == [pytest.approx(expected_norm, rel=1e-5)]
    assert (after - before).norm().item() == pytest.approx(0.1 * 0.5, rel=1e-5)


def _lrs(tmp_path, schedule, max_steps=12, **options):
    trainer = _linear_trainer(tmp_path, max_steps=max_steps, lr=0.1, schedule=schedule,
                              log_every=1, **options)
    return trainer.fit()["lr"]


def test_cosine_schedule_with_warmup(tmp_path):
    lrs = _lrs(tmp_path, "cosine", warmup_steps=4, schedule_options={"min_lr_ratio": 0.1})
    expected = [0.1 * (i + 1) / 4 for i in range(4)]
    expected += [0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - 4) / 8)))
                 for i in range(4, 12)]
    assert lrs == pytest.approx(expected)


def test_step_schedule(tmp_path):
    lrs = _lrs(tmp_path, "step", schedule_options={"step_size": 5, "gamma": 0.5})
    assert lrs == pytest.approx([0.1] * 5 + [0.05] * 5 + [0.025] * 2)


def test_warmup_without_schedule(tmp_path):
    assert _lrs(tmp_path, None, max_steps=6, warmup_steps=3) == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1, 0.1])


def test_onecycle_schedule_follows_torch(tmp_path):
    lrs = _lrs(tmp_path, "onecycle", warmup_steps=3)
    optimizer = torch.optim.Adam(nn.Linear(1, 1).parameters(), lr=0.1)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=12,
                                                    pct_start=0.25)
    expected = []
    for _ in range(12):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert lrs == pytest.approx(expected) and max(lrs) == pytest.approx(0.1)


def test_plateau_schedule_halves_lr_after_patience(tmp_path):
    data = batches(*regression_data(), 16)
    trainer = Trainer(LinearRegressor(), data, None, data, step_fn=_constant_validation_step,
                      workdir=tmp_path, max_steps=6, lr=0.1, schedule="plateau", val_every=1,
                      log_every=1, device="cpu", progress=False, tensorboard=False)
    # validations 2 and 3 do not improve (patience 2); the 4th lowers the lr for step 5 on
    assert trainer.fit()["lr"] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05])


def test_schedule_errors(tmp_path):
    with pytest.raises(LabkitError, match="schedule='warp'"):
        _linear_trainer(tmp_path, schedule="warp")
    with pytest.raises(LabkitError, match="plateau.*needs val_data"):
        _linear_trainer(tmp_path, schedule="plateau")
    with pytest.raises(LabkitError, match=r"\['gama'\] are not used"):
        _linear_trainer(tmp_path, schedule="step", schedule_options={"gama": 0.5})


def test_amp_path_with_a_grad_scaler(tmp_path, monkeypatch):
    with pytest.warns(UserWarning, match="CUDA only"):
        assert _linear_trainer(tmp_path / "cpu", amp=True).amp is False
    # the CUDA code path (autocast + GradScaler), exercised on the CPU
    monkeypatch.setattr(train_module, "_use_amp", lambda amp, device: True)
    trainer = _linear_trainer(tmp_path / "amp", max_steps=20, grad_clip=1.0)
    history = trainer.fit()
    assert trainer.scaler is not None
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert load_checkpoint(tmp_path / "amp" / "final.pt")["scaler"]["scale"] > 0


# ----------------------------------------------------------------------------- errors
def test_argument_errors(tmp_path):
    data = batches(*regression_data(), 16)
    with pytest.raises(LabkitError, match="give loss_fn"):
        Trainer(LinearRegressor(), data, workdir=tmp_path, max_steps=1)
    with pytest.raises(LabkitError, match="give max_steps or epochs"):
        Trainer(LinearRegressor(), data, F.mse_loss, workdir=tmp_path)
    with pytest.raises(LabkitError, match="early_stopping_patience needs val_data"):
        Trainer(LinearRegressor(), data, F.mse_loss, workdir=tmp_path, max_steps=1,
                early_stopping_patience=2)
    with pytest.raises(LabkitError, match="optimizer='lbfgs'"):
        Trainer(LinearRegressor(), data, F.mse_loss, workdir=tmp_path, max_steps=1,
                optimizer="lbfgs")
    frozen = LinearRegressor().requires_grad_(False)
    with pytest.raises(LabkitError, match="no parameters with requires_grad"):
        Trainer(frozen, data, F.mse_loss, workdir=tmp_path, max_steps=1)


def test_bad_batches_and_losses_are_explained(tmp_path):
    x, y = regression_data()
    trainer = Trainer(LinearRegressor(), [x], F.mse_loss, workdir=tmp_path / "a", max_steps=1,
                      device="cpu", progress=False, tensorboard=False)
    with pytest.raises(LabkitError, match="expects batches \\(inputs, targets\\).*Tensor"):
        trainer.fit()
    trainer = Trainer(LinearRegressor(), [(x, y)], lambda out, target: (out - target) ** 2,
                      workdir=tmp_path / "b", max_steps=1, device="cpu", progress=False,
                      tensorboard=False)
    with pytest.raises(LabkitError, match=r"scalar tensor, got \(64, 1\)"):
        trainer.fit()


def test_a_generator_as_train_data_is_explained(tmp_path):
    data = (batch for batch in batches(*regression_data(), 16))
    trainer = Trainer(LinearRegressor(), data, F.mse_loss, workdir=tmp_path, max_steps=10,
                      device="cpu", progress=False, tensorboard=False)
    with pytest.raises(LabkitError, match="no batches in epoch 1.*not a generator"):
        trainer.fit()


def test_tensorboard_scalars(tmp_path, monkeypatch):
    written = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter
        def __init__(self, log_dir):
            written.append(("open", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def close(self):
            written.append(("close", None))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    val = batches(*regression_data(n=8), 8)
    _linear_trainer(tmp_path, max_steps=4, log_every=2, val_every=4, val_data=val,
                    tensorboard=None).fit()
    assert written == [("open", str(tmp_path / "tensorboard")), ("train/loss", 2), ("train/lr", 2),
                       ("train/loss", 4), ("train/lr", 4), ("val/loss", 4), ("close", None)]


def test_tensorboard_true_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    trainer = _linear_trainer(tmp_path, max_steps=1, tensorboard=True)
    with pytest.raises(LabkitError, match="pip install tensorboard"):
        trainer.fit()
    _linear_trainer(tmp_path / "auto", max_steps=1, tensorboard=None).fit()  # quietly without


# ----------------------------------------------------------------------------- evaluate_loss
def test_evaluate_loss_weights_by_batch_size_and_restores_state():
    model = LinearRegressor()
    model.train()
    x, y = regression_data(n=10)
    data = [(x[:8], y[:8]), (x[8:], y[8:])]  # unequal batches
    with torch.no_grad():
        expected = F.mse_loss(model(x), y).item()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    assert evaluate_loss(model, data, F.mse_loss) == pytest.approx(expected, rel=1e-6)
    assert model.training and torch.equal(torch.get_rng_state(), state)


def test_evaluate_loss_of_a_random_step_is_repeatable():
    model = LinearRegressor()
    data = batches(*regression_data(n=32), 8)
    first = evaluate_loss(model, data, step_fn=helpers_train.noisy_step, seed=1)
    assert evaluate_loss(model, data, step_fn=helpers_train.noisy_step, seed=1) == first
    assert evaluate_loss(model, data, step_fn=helpers_train.noisy_step, seed=2) != first
    with pytest.raises(LabkitError, match="no batches"):
        evaluate_loss(model, [], F.mse_loss)


def test_cosine_to_budget_follows_the_larger_share_spent():
    budget = train_module.TimeBudget(100.0)
    schedule = train_module.CosineToBudget(budget, max_steps=1000, min_lr_ratio=0.1)
    run = types.SimpleNamespace(elapsed=0.0, step=0)
    assert schedule.fraction(run) == 0.0 and schedule.factor(0.0) == pytest.approx(1.0)
    run.elapsed, run.step = 50.0, 10  # half the time
    assert schedule.factor(schedule.fraction(run)) == pytest.approx(0.55)
    run.elapsed, run.step = 10.0, 500  # half the steps
    assert schedule.factor(schedule.fraction(run)) == pytest.approx(0.55)
    run.elapsed = 500.0  # past the budget: stays at the floor
    assert schedule.fraction(run) == 1.0 and schedule.factor(1.0) == pytest.approx(0.1)
    with pytest.raises(LabkitError, match="TimeBudget, max_steps"):
        train_module.CosineToBudget()
    with pytest.raises(LabkitError, match="min_lr_ratio"):
        train_module.CosineToBudget(max_steps=10, min_lr_ratio=2.0)


def test_cosine_to_budget_sets_the_rates_the_trainer_uses(tmp_path):
    schedule = train_module.CosineToBudget(max_steps=4)
    trainer = _linear_trainer(tmp_path, max_steps=4, lr=0.1, log_every=1, callbacks=[schedule])
    history = trainer.fit()
    # the rate logged at step k was used for step k; it is lowered after every log
    assert history["lr"] == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * k / 4))
                                           for k in range(4)])
