"""UnlearnRec (Chen, Xia, Huang, SIGIR 2025): a pre-trained Influence Encoder that turns an
unlearning request into new layer-0 embeddings in one forward pass (docs/method.md §2-5)."""

from unlearnrec.unlearn.unlearnrec.config import UnlearnRecConfig
from unlearnrec.unlearn.unlearnrec.encoder import (
    IdentityMLP,
    InfluenceEncoder,
    build_idm,
    dropped_idm,
    local_idm,
)
from unlearnrec.unlearn.unlearnrec.method import UnlearnRec, prior_request

__all__ = [
    "IdentityMLP",
    "InfluenceEncoder",
    "UnlearnRec",
    "UnlearnRecConfig",
    "build_idm",
    "dropped_idm",
    "local_idm",
    "prior_request",
]
