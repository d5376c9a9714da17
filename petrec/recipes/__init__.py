"""Recipes: the entry points that train a model end to end, one readable file each.

:mod:`petrec.recipes.finetune` fine-tunes a behaviour model with one PEFT method
(``petrec train``, ``accelerate launch -m petrec.recipes.finetune`` or the checkout's
``accelerate launch recipes/finetune.py``). Its YAML configs ship in the package under
``petrec/recipes/configs/`` (the checkout's ``recipes/configs`` links there).
"""
