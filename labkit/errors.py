"""Errors labkit raises on bad input: each names the file or value and what would be accepted."""
from __future__ import annotations


class LabkitError(ValueError):
    """Base class of every error labkit raises about its input.

    A subclass of ``ValueError`` so that code catching ``ValueError`` keeps working.
    """


class AudioError(LabkitError):
    """An audio file or array labkit cannot use (missing, unreadable, empty, NaN, wrong shape)."""


class CheckpointError(LabkitError):
    """A checkpoint that is missing, damaged, or belongs to another model."""


class DataError(LabkitError):
    """A data set folder that is missing or does not have the expected layout."""
