"""Reuse the recipe fixtures (tiny random BERT, the finetune recipe module)."""

from tests.recipes.conftest import finetune, tiny_bert  # noqa: F401
