"""Notebook 04: Gabor atoms as an audio codec, one concept per module.

- :mod:`labkit.models.atoms` -- the atoms themselves: the differentiable renderer and the
  ``GaborAtoms`` model (registered as ``"gabor_atoms"``);
- :mod:`labkit.atoms.fit` -- fitting atoms to audio by gradient descent (initialisation, losses,
  growth and pruning, presets, quantization-aware refit);
- :mod:`labkit.atoms.codec` -- quantization, the ``.lkat`` file format, the decoder and the
  measured statistics (size, bit rate, SNR, SI-SNR, LSD, mel distance);
- :mod:`labkit.atoms.baselines` -- what the codec is compared with: MP3 and Opus through
  soundfile, top-K MDCT/STFT coefficient files, and the original-phase measurement not to make;
- :mod:`labkit.atoms.plots` -- atoms over a spectrogram, rate-distortion curves;
- :mod:`labkit.atoms.runs` -- run folders, evaluation from a checkpoint, batches and the
  ``labkit fit-atoms`` command.

Nothing is imported here, so that ``labkit --help`` does not load torch.
"""
