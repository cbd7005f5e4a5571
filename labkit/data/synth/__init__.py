"""The synthesiser behind the built-in toy-MUSDB data set (see :mod:`labkit.data.toy`).

One module per concern, all plain NumPy/SciPy so that the data set needs nothing beyond pip:

- :mod:`~labkit.data.synth.dsp`: oscillators, envelopes, filters, STFT-domain filtering, reverb.
- :mod:`~labkit.data.synth.music`: the score: tempo, key, chords, sections, melodies.
- :mod:`~labkit.data.synth.vocals`, :mod:`~labkit.data.synth.drums`,
  :mod:`~labkit.data.synth.bass`, :mod:`~labkit.data.synth.other`: several sound engines per stem.
- :mod:`~labkit.data.synth.mix`: per-stem EQ, panning, reverb and level balancing.

Every engine renders mono *layers* ``(samples,)`` float32 with a pan position; the mixer turns
them into stems ``(channels, samples)``.
"""
