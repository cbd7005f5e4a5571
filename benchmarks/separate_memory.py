"""Peak memory of labkit.separate.separate() and separate_file() on 1- and 5-minute songs.

Run: ``.venv/bin/python benchmarks/separate_memory.py`` (about 5 minutes on 2 CPU cores).

Each case runs in a fresh subprocess, so one case's memory cannot leak into the next. The
baseline is the process's resident memory (RSS) after importing torch and labkit and building the
model; the peak is ``ru_maxrss`` at the end. For :func:`separate` the peak includes the input and
the output arrays, which necessarily scale with the song (their sizes are reported); what does not
scale is the working memory = peak - baseline - input - output. :func:`separate_file` reads and
writes in blocks, so its whole increase over the baseline is working memory.

The model is a small waveform U-Net-like conv net (1.5 M parameters, 4 stems, stereo 44.1 kHz),
enough that activations of a 10 s chunk are a realistic part of the budget. Writes
``benchmarks/results/separate_memory.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "separate_memory.json"
SR = 44100
DURATIONS = (60, 300)
FUNCTIONS = ("separate", "separate_file")


def rss_mb() -> float:
    """Current resident memory of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far in MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1e3 / 1e6


def build_model():
    """A waveform conv encoder/decoder that predicts 4 masks, stereo 44.1 kHz, ~1.5 M params."""
    import torch
    from torch import nn

    class ConvSeparator(nn.Module):
        sample_rate = SR
        channels = 2
        sources = ("vocals", "drums", "bass", "other")
        chunk_seconds = 10.0

        def __init__(self, widths=(48, 96, 192, 384), kernel=8, stride=4):
            super().__init__()
            self.stride, self.depth = stride, len(widths)
            chans = (self.channels, *widths)
            self.down = nn.ModuleList(
                nn.Sequential(nn.Conv1d(a, b, kernel, stride, padding=(kernel - stride) // 2),
                              nn.GELU()) for a, b in itertools.pairwise(chans))
            self.up = nn.ModuleList(
                nn.Sequential(nn.ConvTranspose1d(b, a if i else 4 * self.channels, kernel, stride,
                                                 padding=(kernel - stride) // 2),
                              nn.GELU() if i else nn.Identity())
                for i, (a, b) in enumerate(itertools.pairwise(chans)))

        def valid_length(self, n: int) -> int:
            step = self.stride ** self.depth
            return -(-n // step) * step

        def forward(self, x):
            skips, h = [], x
            for layer in self.down:
                skips.append(h)
                h = layer(h)
            for i in reversed(range(self.depth)):
                h = self.up[i](h)
                if i:
                    h = h + skips[i]
            masks = torch.sigmoid(h).view(x.shape[0], 4, self.channels, -1)
            return masks * x[:, None]

    return ConvSeparator()


def child(function: str, seconds: int, path: str) -> dict:
    """One measurement, in this (fresh) process."""
    import numpy as np
    import torch

    from labkit.separate import separate, separate_file

    torch.manual_seed(0)
    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    baseline = rss_mb()
    result = {"function": function, "seconds": seconds, "params": params,
              "baseline_rss_mb": round(baseline, 1)}
    start = time.perf_counter()
    if function == "separate":
        rng = np.random.default_rng(0)
        audio = (0.1 * rng.standard_normal((2, seconds * SR))).astype(np.float32)
        out = separate(model, audio, SR, progress=False)
        result["input_mb"] = round(audio.nbytes / 1e6, 1)
        result["output_mb"] = round(out.nbytes / 1e6, 1)
    else:
        with tempfile.TemporaryDirectory() as out_dir:
            separate_file(path, model, out_dir=out_dir, progress=False)
        result["input_mb"] = result["output_mb"] = 0.0
    result["wall_s"] = round(time.perf_counter() - start, 1)
    peak = peak_rss_mb()
    result["peak_rss_mb"] = round(peak, 1)
    result["peak_minus_baseline_mb"] = round(peak - baseline, 1)
    result["working_mb"] = round(peak - baseline - result["input_mb"] - result["output_mb"], 1)
    return result


def write_song(path: Path, seconds: int) -> None:
    """A stereo 16-bit WAV of noise, written in blocks so the parent stays small."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", samplerate=SR, channels=2, subtype="PCM_16") as f:
        for _ in range(seconds // 10):
            f.write((0.1 * rng.standard_normal((10 * SR, 2))).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("FUNCTION", "SECONDS", "PATH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        function, seconds, path = args.child
        print(json.dumps(child(function, int(seconds), path)))
        return

    import torch

    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in DURATIONS:
            song = Path(tmp) / f"song_{seconds}s.wav"
            write_song(song, seconds)
            for function in FUNCTIONS:
                run = subprocess.run(
                    [sys.executable, __file__, "--child", function, str(seconds), str(song)],
                    capture_output=True, text=True, check=True, cwd=HERE.parent)
                case = json.loads(run.stdout.strip().splitlines()[-1])
                cases.append(case)
                print(f"{function:>14} {seconds:4d} s: peak {case['peak_rss_mb']:7.1f} MB, "
                      f"baseline {case['baseline_rss_mb']:6.1f} MB, in/out "
                      f"{case['input_mb']:.0f}/{case['output_mb']:.0f} MB, working "
                      f"{case['working_mb']:6.1f} MB, {case['wall_s']:.0f} s", flush=True)
    report = {
        "benchmark": "peak resident memory of separate() and separate_file()",
        "command": ".venv/bin/python benchmarks/separate_memory.py",
        "settings": {"sample_rate": SR, "channels": 2, "sources": 4, "chunk_seconds": 10.0,
                     "overlap": 0.25, "batch_size": 1, "device": "cpu",
                     "input": "stereo noise; separate_file reads a 16-bit WAV and writes four "
                              "32-bit float WAVs"},
        "method": "each case in a fresh subprocess; baseline = RSS after imports and model "
                  "construction; peak = ru_maxrss; working = peak - baseline - input array - "
                  "output array",
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "note": "2 CPU cores shared with other jobs: wall times are pessimistic"},
        "cases": cases,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULT.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
