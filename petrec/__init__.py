"""petrec: parameter-efficient fine-tuning of pretrained models for recommender systems.

The public API for adapters lives in :mod:`petrec.methods` and is re-exported here::

    import petrec
    model = petrec.attach(model, "lora", r=8, alpha=16)
    petrec.trainable_report(model)
    petrec.save_adapter(model, "out/")
    model = petrec.load_adapter(base_model, "out/")
    merged = petrec.merge(model)
    petrec.METHODS
"""

from __future__ import annotations

__version__ = "0.1.0"

#: Names re-exported lazily from :mod:`petrec.methods` (``import petrec`` stays light).
_METHOD_EXPORTS = ("attach", "trainable_report", "save_adapter", "load_adapter", "merge", "METHODS")

__all__ = ["__version__", *_METHOD_EXPORTS]


def __getattr__(name: str) -> object:
    if name in _METHOD_EXPORTS:
        import petrec.methods

        return getattr(petrec.methods, name)
    raise AttributeError(f"module 'petrec' has no attribute {name!r}")
