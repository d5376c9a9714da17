"""The checkout's path to the fine-tuning recipe, so the documented launch commands keep working::

    accelerate launch recipes/finetune.py --config recipes/configs/ml100k_ctr_lora.yaml

The recipe is :mod:`petrec.recipes.finetune` (``petrec/recipes/finetune.py``, shipped in the
wheel). This file runs it exactly as ``accelerate launch -m petrec.recipes.finetune`` does.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("petrec.recipes.finetune", run_name="__main__", alter_sys=True)
