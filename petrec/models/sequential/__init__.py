"""Sequential (next-item) recommenders: ID baselines, the text-based model and their data bridge.

Uniform interface (:mod:`petrec.models.sequential.common`): ``model(**batch).loss`` for training,
``model.score_all(batch) -> (B, n_items)`` for full ranking. Trained by :func:`petrec.train.train`
with :func:`make_seq_eval`; ``python -m petrec.models.sequential.run --config ...`` runs P3 / P4.
:class:`SequenceCTR` puts the same encoders under a binary head for click / like prediction (P1, P2).
"""

from petrec.models.sequential.baselines import BPRMF, Popularity
from petrec.models.sequential.caser import Caser
from petrec.models.sequential.common import SeqOutput
from petrec.models.sequential.ctr import ItemVocab, SequenceCTR, SequenceCTRConfig
from petrec.models.sequential.data import SeqData, SeqDataError, cycle_data, from_interactions
from petrec.models.sequential.evaluate import make_seq_eval
from petrec.models.sequential.rnn import GRU4Rec
from petrec.models.sequential.sasrec import SASRec, SASRecConfig
from petrec.models.sequential.text import TextItemEmbedding, encode_item_texts

__all__ = [
    "BPRMF",
    "Caser",
    "GRU4Rec",
    "ItemVocab",
    "Popularity",
    "SASRec",
    "SASRecConfig",
    "SeqData",
    "SeqDataError",
    "SeqOutput",
    "SequenceCTR",
    "SequenceCTRConfig",
    "TextItemEmbedding",
    "cycle_data",
    "encode_item_texts",
    "from_interactions",
    "make_seq_eval",
]
