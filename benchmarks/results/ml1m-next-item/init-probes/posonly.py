"""Probe: default init except the position table N(0, 0.02)."""
import torch
from torch import nn
from petrec.models.sequential import sasrec, run

_orig = sasrec.SASRec.__init__
def patched(self, *a, **k):
    _orig(self, *a, **k)
    nn.init.normal_(self.position.weight, std=0.02)
sasrec.SASRec.__init__ = patched
run.main()
