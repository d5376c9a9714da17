"""PEFT methods for any model: attach, report, save, load, merge, switch adapters.

::

    import petrec
    model = petrec.attach(model, "lora", r=8, alpha=16)    # base frozen, LoRA + head train
    print(petrec.trainable_report(model))
    petrec.save_adapter(model, "out/")                     # safetensors + JSON, head included
    model = petrec.load_adapter(base_model, "out/")        # same outputs as before saving
    merged = petrec.merge(model)                           # plain model, adapter folded in

Multiple adapters on one frozen base::

    petrec.methods.add_adapter(model, "task_b", "lora", r=4)   # becomes active
    petrec.methods.set_adapter(model, "default")
    with petrec.methods.disable_adapter(model):                # base outputs, original head
        ...

Module map: :mod:`.registry` (``METHODS``), :mod:`.peft_methods` (lora, dora, ia3, qlora),
:mod:`.simple` (full, head, bitfit), :mod:`.bottleneck` (adapter), :mod:`.prefix`,
:mod:`.prompt`, :mod:`.quantization` (nf4 / int8, CPU and CUDA), :mod:`.io` (save / load),
:mod:`.api` (attach, merge, report, switching).
"""

from petrec.methods.api import (
    TrainableReport,
    active_adapter,
    add_adapter,
    attach,
    disable_adapter,
    list_adapters,
    merge,
    set_adapter,
    trainable_report,
)
from petrec.methods.errors import AdapterLoadError, MergeError, PetrecMethodError
from petrec.methods.io import load_adapter, save_adapter
from petrec.methods.quantization import load_quantized, weight_memory
from petrec.methods.registry import METHODS, MethodSpec, get_method

__all__ = [
    "METHODS",
    "AdapterLoadError",
    "MergeError",
    "MethodSpec",
    "PetrecMethodError",
    "TrainableReport",
    "active_adapter",
    "add_adapter",
    "attach",
    "disable_adapter",
    "get_method",
    "list_adapters",
    "load_adapter",
    "load_quantized",
    "merge",
    "save_adapter",
    "set_adapter",
    "trainable_report",
    "weight_memory",
]
