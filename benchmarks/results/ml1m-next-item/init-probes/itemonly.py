"""Probe: default init except the item table N(0, 0.02) (padding row zero)."""
import torch
from torch import nn
from petrec.models.sequential import sasrec, run

_orig = sasrec.SASRec.__init__
def patched(self, *a, **k):
    _orig(self, *a, **k)
    w = self.items.embedding.weight
    nn.init.normal_(w, std=0.02)
    with torch.no_grad():
        w[0].zero_()
sasrec.SASRec.__init__ = patched
run.main()
