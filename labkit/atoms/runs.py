"""Runs of the atom codec: one folder per fit, evaluation from a checkpoint, batches, the CLI.

A run folder (:func:`fit_file`) holds::

    log.txt              what happened, step by step
    config.yaml          the source file, the fit config, the codec's bits, the run manifest
    checkpoints/step_*.pt  labkit checkpoints of the atoms during the fit; final.pt at the end
    atoms.lkat           the encoded file (format: :mod:`labkit.atoms.codec`)
    reconstructed.wav    what a decoder renders from atoms.lkat, read back from disk
    atoms.png            the atoms over the input's spectrogram
    metrics.json         sizes and scores measured on reconstructed.wav (codec.codec_stats)

:func:`evaluate_checkpoint` encodes and scores the atoms of any checkpoint again (e.g. at other
bits), :func:`fit_folder` fits every audio file of a folder and writes ``summary.csv``.
``labkit fit-atoms FILE_OR_FOLDER ...`` is the command line (:func:`add_fit_atoms`).
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError

__all__ = [
    "DEFAULT_BITS", "SUMMARY_COLUMNS", "add_fit_atoms", "default_run_dir", "encode_atoms",
    "evaluate_checkpoint", "fit_file", "fit_folder", "parse_bits_option", "run_fit_atoms",
]

#: The codec's default bits per parameter: chosen on the speech clip by trading each bit against
#: more atoms (see benchmarks/atoms.py); uniform 8 bits is far worse because frequency needs ~12.
DEFAULT_BITS: dict[str, int] = {"centre": 8, "width": 5, "frequency": 12, "amplitude": 6,
                                "phase": 6, "chirp": 8}

#: Columns of a batch's summary.csv.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "file", "n_atoms", "bytes", "kbps", "ratio", "bits_per_atom", "snr", "si_snr", "lsd",
    "mel_distance", "fit_snr", "fit_seconds", "run_dir",
)


class _Log:
    """Lines to ``log.txt`` (flushed at once), echoed to the terminal unless quiet."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path, self.echo = path, echo
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}"
        self._file.write(line + "\n")
        self._file.flush()
        if self.echo:
            print(message, flush=True)

    def close(self) -> None:
        self._file.close()


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(dict(data), indent=2) + "\n", encoding="utf-8")


def default_run_dir(path: str | Path, n_atoms: int, init: str, root: str | Path = "runs/atoms"
                    ) -> Path:
    """``<root>/<file stem>_n<atoms>_<init>``, e.g. ``runs/atoms/speech_n500_peaks``."""
    return Path(root) / f"{Path(path).stem}_n{n_atoms}_{init}"


def encode_atoms(params: Mapping[str, Any], reference: Any, sr: int,
                 bits: int | Mapping[str, int] = DEFAULT_BITS, refit_steps: int = 0,
                 model: Any = None, progress: bool = False) -> bytes:
    """Encode atoms to file bytes, optionally after a quantization-aware refit against
    ``reference`` (``(1, samples)``; ``model`` is the GaborAtoms the params came from)."""
    from labkit.atoms import codec
    from labkit.atoms.fit import refit_quantized

    length = int(reference.shape[-1])
    if refit_steps > 0 and model is not None:
        params, ranges = refit_quantized(model, reference, bits, steps=refit_steps,
                                         progress=progress)
        return codec.encode(params, sr, length, bits, ranges)
    return codec.encode(params, sr, length, bits)


def _finish(run_dir: Path, model: Any, reference: Any, sr: int, bits: Any, refit_steps: int,
            log: _Log, extra: Mapping[str, Any], progress: bool) -> dict[str, Any]:
    """Encode, write atoms.lkat, decode it from disk, write wav/png/metrics; returns metrics."""
    import matplotlib.pyplot as plt

    from labkit import audio as audio_io
    from labkit import figures
    from labkit.atoms import codec
    from labkit.atoms.plots import plot_atoms

    data = encode_atoms(model.params(), reference, sr, bits, refit_steps, model, progress)
    file_path = run_dir / "atoms.lkat"
    file_path.write_bytes(data)
    stored = file_path.read_bytes()  # the decoder sees only what is on disk
    decoded, decoded_sr = codec.decode_audio(stored)
    audio_io.save(run_dir / "reconstructed.wav", decoded, decoded_sr)
    stats = codec.codec_stats(reference, stored, decoded)
    stats.update(extra)
    _write_json(run_dir / "metrics.json", stats)
    params, _, _ = codec.decode(stored)
    fig, _ = plot_atoms(params, reference, sr, title=f"{stats['n_atoms']} atoms, "
                        f"{stats['kbps']:.1f} kbit/s, SNR {stats['snr']:.1f} dB")
    figures.save(fig, "atoms", folder=run_dir, formats=("png",))
    plt.close(fig)
    log(f"encoded {stats['n_atoms']} atoms in {stats['bytes']} bytes ({stats['kbps']:.2f} kbit/s,"
        f" {stats['ratio']:.1f}x smaller than 16-bit PCM, {stats['bits_per_atom']:.1f} bits/atom)")
    log(f"decoded from {file_path.name}: SNR {stats['snr']:.2f} dB, SI-SNR "
        f"{stats['si_snr']:.2f} dB, LSD {stats['lsd']:.2f} B, mel distance "
        f"{stats['mel_distance']:.2f} dB")
    return stats


def fit_file(path: str | Path, out_dir: str | Path | None = None, config: Any = None,
             bits: int | Mapping[str, int] = DEFAULT_BITS, refit_steps: int = 0,
             checkpoint_every: int = 1000, log_every: int = 100, sr: int | None = None,
             progress: bool = True, echo: bool = False) -> dict[str, Any]:
    """Fit atoms to the audio file ``path`` and write a run folder (module docstring).

    ``config``: a :class:`~labkit.atoms.fit.FitConfig` (default preset ``"default"``); ``sr``
    resamples on loading; several channels are mixed to mono. Returns the metrics dict with
    ``run_dir`` added.
    """
    from labkit import audio as audio_io
    from labkit.atoms.fit import FitConfig, fit, preset
    from labkit.checkpoint import save_checkpoint
    from labkit.core import run_manifest

    config = config if config is not None else preset("default")
    if not isinstance(config, FitConfig):
        raise LabkitError(f"config is {type(config).__name__}; expected a FitConfig")
    reference, file_sr = audio_io.load(path, sr=sr, mono=True)
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(path, config.n_atoms,
                                                                         config.init)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    log = _Log(run_dir / "log.txt", echo)
    # a JSON round trip turns str subclasses (torch's version string) into plain str for YAML
    manifest = json.loads(json.dumps(run_manifest(seed=config.seed, source=str(path))))
    bits_value = dict(bits) if isinstance(bits, Mapping) else int(bits)
    _write_yaml(run_dir / "config.yaml", {
        "source": str(path), "sample_rate": file_sr, "samples": int(reference.shape[-1]),
        "fit": config.to_dict(), "codec": {"bits": bits_value, "refit_steps": refit_steps},
        "manifest": manifest})
    log(f"fitting {config.n_atoms} atoms ({config.init} init, {config.loss} loss) to {path}: "
        f"{reference.shape[-1] / file_sr:.2f} s at {file_sr} Hz, {config.steps} steps")
    extra = {"source": str(path), "fit_config": config.to_dict()}

    def callback(step: int, model: Any, history: dict[str, list]) -> None:
        done = step + 1
        if done % log_every == 0 or done == config.steps:
            log(f"step {done}: loss {history['loss'][-1]:.5f}, SNR {history['snr'][-1]:.2f} dB, "
                f"{model.n_atoms} atoms")
        if step in config.grow_at:
            log(f"step {step}: grew/pruned to {model.n_atoms} atoms")
        if checkpoint_every and done % checkpoint_every == 0:
            save_checkpoint(run_dir / "checkpoints" / f"step_{done:07d}.pt", model=model,
                            step=done, manifest=manifest, extra=extra)

    try:
        result = fit(reference, file_sr, config, progress=progress, callback=callback)
        save_checkpoint(run_dir / "final.pt", model=result.model, step=config.steps,
                        manifest=manifest, extra=extra)
        log(f"fit done in {result.seconds:.1f} s: SNR before quantization "
            f"{result.history['snr'][-1] if result.history['snr'] else float('nan'):.2f} dB")
        stats = _finish(run_dir, result.model, reference, file_sr, bits, refit_steps, log,
                        {"fit_snr": result.history["snr"][-1] if result.history["snr"] else None,
                         "fit_seconds": result.seconds}, progress)
    finally:
        log.close()
    stats["run_dir"] = str(run_dir)
    return stats


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None,
                        reference: str | Path | None = None,
                        bits: int | Mapping[str, int] = DEFAULT_BITS, refit_steps: int = 0,
                        progress: bool = True, echo: bool = False) -> dict[str, Any]:
    """Encode the atoms of a checkpoint, decode them from the bytes and score them.

    ``reference`` is the audio file to compare with (default: the source stored in the
    checkpoint). Writes atoms.lkat, reconstructed.wav, atoms.png, metrics.json and log.txt into
    ``out_dir`` (default ``<checkpoint folder>/eval``). Returns the metrics with ``run_dir``.
    """
    from labkit import audio as audio_io
    from labkit.checkpoint import load_checkpoint, load_model

    checkpoint = Path(checkpoint)
    info = load_checkpoint(checkpoint, expected_model="gabor_atoms")
    model = load_model(checkpoint, expected_model="gabor_atoms")
    source = reference if reference is not None else (info.get("extra") or {}).get("source")
    if source is None:
        raise LabkitError(f"{checkpoint} does not name its source audio; pass reference=PATH")
    ref, sr = audio_io.load(source, sr=model.sample_rate, mono=True)
    if ref.shape[-1] != model.length:
        raise LabkitError(f"{source} has {ref.shape[-1]} samples at {model.sample_rate} Hz; the "
                          f"atoms in {checkpoint} were fitted to {model.length}")
    base = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else \
        checkpoint.parent
    run_dir = Path(out_dir) if out_dir is not None else base / "eval"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _Log(run_dir / "log.txt", echo)
    try:
        log(f"evaluating {checkpoint} (step {info['step']}, {model.n_atoms} atoms) against "
            f"{source}")
        stats = _finish(run_dir, model, ref, sr, bits, refit_steps, log,
                        {"checkpoint": str(checkpoint), "step": info["step"],
                         "source": str(source)}, progress)
    finally:
        log.close()
    stats["run_dir"] = str(run_dir)
    return stats


def fit_folder(folder: str | Path, out_dir: str | Path = "runs/atoms", config: Any = None,
               bits: int | Mapping[str, int] = DEFAULT_BITS, refit_steps: int = 0,
               checkpoint_every: int = 1000, sr: int | None = None, progress: bool = True,
               echo: bool = False) -> Path:
    """Fit every audio file in ``folder`` (not recursive) into ``out_dir/<stem>/`` and write
    ``out_dir/summary.csv`` (:data:`SUMMARY_COLUMNS`, one row per file). Returns its path."""
    from labkit.audio import SUPPORTED_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise LabkitError(f"'{folder}' is not a folder of audio files")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
    if not files:
        raise LabkitError(f"'{folder}' holds no audio files ({', '.join(SUPPORTED_EXTENSIONS)})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in files:
        stats = fit_file(path, out_dir / path.stem, config, bits, refit_steps, checkpoint_every,
                         sr=sr, progress=progress, echo=echo)
        stats["file"] = path.name
        rows.append(stats)
    summary = out_dir / "summary.csv"
    with summary.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v)
                             for k, v in row.items() if k in SUMMARY_COLUMNS})
    return summary


# --------------------------------------------------------------------------- command line
def parse_bits_option(text: str) -> int | dict[str, int]:
    """``"8"`` -> 8 bits for every parameter; ``"frequency=12,phase=6"`` -> those, the rest
    from :data:`DEFAULT_BITS`; ``"default"`` -> :data:`DEFAULT_BITS`."""
    text = text.strip()
    if text == "default":
        return dict(DEFAULT_BITS)
    if text.isdigit():
        return int(text)
    bits = dict(DEFAULT_BITS)
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise LabkitError(f"--bits {text!r}: expected a number (e.g. 8) or name=bits pairs "
                              "(e.g. frequency=12,phase=6)")
        bits[name.strip()] = int(value)
    return bits


def add_fit_atoms(subparsers: argparse._SubParsersAction) -> None:
    """``labkit fit-atoms FILE_OR_FOLDER [--atoms N] [--steps N] [--init peaks] [--loss l2]
    [--bits 8] [--grow-at STEP ...] ...`` (notebook 04).

    Builds the parser without importing torch (``labkit --help`` stays fast): names of presets,
    initialisations and losses are checked by :class:`~labkit.atoms.fit.FitConfig`, whose error
    lists the accepted ones.
    """
    p = subparsers.add_parser(
        "fit-atoms", help="fit Gabor atoms to audio and encode them (notebook 04)",
        description="Fit a sum of Gaussian-windowed sinusoids to an audio file by gradient "
                    "descent, store them in an atom file and report its real size and the "
                    "quality decoded from it. A folder fits every audio file in it and writes "
                    "summary.csv. --eval CHECKPOINT re-encodes and scores a saved fit.")
    p.add_argument("path", type=Path, nargs="?", help="audio file, or a folder of them")
    p.add_argument("--preset", default="default",
                   help="starting settings: default, speech or music (default: %(default)s)")
    p.add_argument("--atoms", type=int, default=None, help="number of atoms to start with")
    p.add_argument("--steps", type=int, default=None, help="Adam steps")
    p.add_argument("--lr", type=float, default=None, help="learning rate (see LR_SCALES)")
    p.add_argument("--init", default=None, help="initialisation: peaks, random or uniform")
    p.add_argument("--loss", default=None, help="primary loss: l2, l1 or spectral")
    p.add_argument("--mix", type=float, default=None,
                   help="weight in [0, 1] of the secondary loss term")
    p.add_argument("--grow-at", type=int, nargs="*", default=None, metavar="STEP",
                   help="steps at which to prune weak atoms and add new ones on the residual")
    p.add_argument("--grow-by", type=int, default=None, help="atoms added at each growth step")
    p.add_argument("--prune-below", type=float, default=None,
                   help="prune atoms weaker than this times the mean atom energy")
    p.add_argument("--chirp", action="store_true", help="give every atom a chirp rate")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--bits", type=parse_bits_option, default=dict(DEFAULT_BITS),
                   help="bits per parameter: a number for all, or name=bits pairs "
                        "(default: centre=8,width=5,frequency=12,amplitude=6,phase=6)")
    p.add_argument("--refit-steps", type=int, default=0,
                   help="quantization-aware refit steps before encoding (default: 0)")
    p.add_argument("--sr", type=int, default=None, help="resample the input to this rate")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (a file) or parent folder (a folder); default runs/atoms/...")
    p.add_argument("--checkpoint-every", type=int, default=1000, metavar="STEPS")
    p.add_argument("--eval", type=Path, default=None, metavar="CHECKPOINT",
                   help="encode and score a saved fit instead of fitting")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.set_defaults(func=run_fit_atoms)


def _config_from_args(args: argparse.Namespace) -> Any:
    from labkit.atoms.fit import preset

    overrides = {key: value for key, value in (
        ("n_atoms", args.atoms), ("steps", args.steps), ("lr", args.lr), ("init", args.init),
        ("loss", args.loss), ("mix", args.mix), ("grow_at", args.grow_at),
        ("grow_by", args.grow_by), ("prune_below", args.prune_below), ("seed", args.seed),
    ) if value is not None}
    if args.chirp:
        overrides["chirp"] = True
    return preset(args.preset, **overrides)


def run_fit_atoms(args: argparse.Namespace) -> int:
    """Run ``labkit fit-atoms``; prints where the results went and the measured numbers."""
    progress, echo = not args.quiet, not args.quiet
    if args.eval is not None:
        stats = evaluate_checkpoint(args.eval, args.out, args.path, args.bits, args.refit_steps,
                                    progress=progress, echo=echo)
        print(f"wrote {stats['run_dir']}")
        return 0
    if args.path is None:
        raise LabkitError("fit-atoms: give an audio file or folder (or --eval CHECKPOINT)")
    config = _config_from_args(args)
    if args.path.is_dir():
        summary = fit_folder(args.path, args.out or Path("runs/atoms"), config, args.bits,
                             args.refit_steps, args.checkpoint_every, args.sr, progress, echo)
        print(f"wrote {summary}")
        return 0
    stats = fit_file(args.path, args.out, config, args.bits, args.refit_steps,
                     args.checkpoint_every, sr=args.sr, progress=progress, echo=echo)
    print(f"wrote {stats['run_dir']}: {stats['bytes']} bytes, {stats['kbps']:.2f} kbit/s, "
          f"SNR {stats['snr']:.2f} dB")
    return 0
