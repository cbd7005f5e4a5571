"""Tiny registered models and synthetic data for the trainer and checkpoint tests.

Run as a script it trains the noisy MLP below (shuffled DataLoader, dropout, random noise in the
step: every source of randomness an exact resume must reproduce); the SIGKILL test kills such a
run and resumes it::

    python tests/helpers_train.py WORKDIR --max-steps 30 --ckpt-every 5 --sleep 0.1 --resume auto
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.models import register_model


@register_model("test_linear")
class LinearRegressor(nn.Module):
    """y = W x + b on (batch, n_in) -> (batch, n_out)."""

    def __init__(self, n_in: int = 4, n_out: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@register_model("test_mlp")
class NoisyMLP(nn.Module):
    """A two-layer MLP with dropout: (batch, n_in) -> (batch, n_out)."""

    def __init__(self, n_in: int = 4, hidden: int = 16, n_out: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def regression_data(n: int = 64, n_in: int = 4, seed: int = 0,
                    noise: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, n_in) and targets (n, 1) of a fixed linear map plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=generator)
    weight = torch.arange(1, n_in + 1, dtype=torch.float32).unsqueeze(1) / n_in
    y = x @ weight + 0.5 + noise * torch.randn(n, 1, generator=generator)
    return x, y


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[tuple]:
    """A fixed list of (inputs, targets) batches: the simplest re-iterable train_data."""
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def noisy_step(model: nn.Module, batch: tuple, device: torch.device) -> torch.Tensor:
    """A step_fn that draws random input noise, like a diffusion model's step."""
    x, y = batch
    x = x + 0.05 * torch.randn_like(x)
    return nn.functional.mse_loss(model(x), y)


def build_run(workdir: Path, max_steps: int, ckpt_every: int | None = 5, resume=None,
              sleep: float = 0.0, **options):
    """The Trainer of the resume tests: shuffled loader, dropout, noisy step, validation."""
    from labkit import seed_everything
    from labkit.train import Trainer

    seed_everything(0)
    model = NoisyMLP()
    x, y = regression_data(n=60)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)  # 8 batches per epoch
    val = batches(*regression_data(n=16, seed=1), batch_size=8)

    def step(model, batch, device):
        if sleep:
            time.sleep(sleep)
        return noisy_step(model, batch, device)

    return Trainer(model, loader, None, val, workdir=workdir, max_steps=max_steps, lr=0.02,
                   step_fn=step, ckpt_every=ckpt_every, val_every=3, log_every=2,
                   device="cpu", progress=False, tensorboard=False, resume=resume, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--ckpt-every", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the same thread count in every run keeps float sums identical
    trainer = build_run(args.workdir, args.max_steps, args.ckpt_every, args.resume, args.sleep)
    trainer.fit()
    print(f"finished at step {trainer.step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
