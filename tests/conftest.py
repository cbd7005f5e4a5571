"""Test-wide settings: fast mode, a headless matplotlib and static widgets.

They are set in the environment before any kernel starts, so that the notebook kernels nbval
starts inherit them; figures that notebooks save during the tests go to a temporary folder
instead of the checkout's build/.
"""
import os
import tempfile

os.environ.setdefault("LABKIT_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("LABKIT_STATIC", "1")
os.environ.setdefault("LABKIT_FIGURES_DIR", tempfile.mkdtemp(prefix="labkit-figures-"))
