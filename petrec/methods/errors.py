"""Exceptions raised by :mod:`petrec.methods`; every message names what was wrong and what was expected."""

from __future__ import annotations


class PetrecMethodError(ValueError):
    """A PEFT method cannot be applied as asked (unknown name, bad option, unsupported model)."""


class AdapterLoadError(PetrecMethodError):
    """A saved adapter folder does not fit the base model it is being loaded into."""


class MergeError(PetrecMethodError):
    """The adapter cannot be folded into the base weights (prefix, prompt, bottleneck adapter)."""
