"""The Backbone contract every recommender implements (``Batch`` lives in :mod:`unlearnrec.data.sampling`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnrec.data.graph import Graph
from unlearnrec.data.sampling import Batch
from unlearnrec.losses import bpr_loss, info_nce, l2_reg


class Backbone(nn.Module):
    """A recommender with a trainable layer-0 table E⁰ of shape (N, d), N = num_users + num_items.

    Two methods make the contract:

    - ``embed(graph, e0=None) -> (user_emb (U, d), item_emb (I, d))``: final embeddings Ē.
    - ``loss(graph, batch, e0=None, generator=None) -> dict`` of named scalar terms
      (``bpr``, ``reg``, and ``ssl`` for self-supervised backbones); ``total`` is their sum.
      ``loss_and_output`` returns the same terms together with the final embeddings Ē they were
      computed on (one propagation for callers that add their own terms on Ē).

    ``e0`` replaces the layer-0 table with one supplied from outside (the Influence Encoder's Ẽ⁰
    and every unlearner rely on this). A backbone never owns the optimiser, the epoch loop,
    evaluation or saving. ``generator`` drives any randomness of the loss (augmented views).
    """

    name = "base"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int,
        reg: float,
        init_std: float = 0.1,
        generator: torch.Generator | None = None,
        init: str = "normal",
    ):
        super().__init__()
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.dim = int(dim)
        self.reg = float(reg)
        w = torch.empty(self.num_users + self.num_items, self.dim)
        if init == "xavier":
            # SELFRec's and SSLRec's (the UnlearnRec authors' code): Xavier-uniform on the user and the
            # item tables separately, bound sqrt(6 / (rows + d)): std ~0.008 on Yelp2018 at d = 64
            nn.init.xavier_uniform_(w[: self.num_users], generator=generator)
            nn.init.xavier_uniform_(w[self.num_users :], generator=generator)
        else:  # "normal": LightGCN-PyTorch's N(0, init_std²)
            nn.init.normal_(w, std=init_std, generator=generator)
        self.e0 = nn.Parameter(w)

    # -- the contract ---------------------------------------------------------------------------
    def propagate(self, graph: Graph, e0: torch.Tensor) -> torch.Tensor:
        """Final node embeddings Ē (N, d) from layer-0 embeddings; the identity for non-graph models."""
        raise NotImplementedError

    def embed(self, graph: Graph, e0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(user_emb (U, d), item_emb (I, d)) of the final readout Ē."""
        out = self.propagate(graph, self.e0 if e0 is None else e0)
        return out[: self.num_users], out[self.num_users :]

    def on_epoch_start(self, graph: Graph, generator: torch.Generator | None = None) -> None:
        """Called by the training loop before each epoch over ``graph``; a no-op by default.

        Backbones whose augmentation is drawn once per epoch (SGL's edge-dropped views) draw it here.
        """

    def ssl_loss(
        self, graph: Graph, batch: Batch, e0: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """The backbone's self-supervised term (None for plain backbones)."""
        return None

    def loss(
        self,
        graph: Graph,
        batch: Batch,
        e0: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named loss terms on one batch: BPR on Ē, L2 on the batch's layer-0 rows, SSL if any."""
        return self.loss_and_output(graph, batch, e0, generator)[0]

    def loss_and_output(
        self,
        graph: Graph,
        batch: Batch,
        e0: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(:meth:`loss`'s terms, the final embeddings Ē (N, d) its BPR term was computed on).

        Ē is ``propagate(graph, e0)`` with its autograd graph, so a caller that adds terms on the
        final embeddings (UnlearnRec's L_u and L_p) shares this step's propagation instead of
        running a second one. Backbones that specialise their loss override this method.
        """
        e0 = self.e0 if e0 is None else e0
        out = self.propagate(graph, e0)
        terms = self.bpr_terms(out, e0, batch)
        ssl = self.ssl_loss(graph, batch, e0, generator)
        if ssl is not None:
            terms["ssl"] = ssl
        terms["total"] = sum(terms.values())
        return terms, out

    def bpr_terms(self, out: torch.Tensor, e0: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """``bpr`` on the final embeddings ``out`` (N, d) and ``reg`` on the layer-0 rows ``e0`` (N, d)."""
        # one gather of the batch's (user, positive, negative) rows instead of three: each gather's
        # backward scatters into a dense (N, d) gradient, the dominant cost after the propagation.
        # F.embedding, not out[idx]: the same rows, and its backward (a sorted accumulation) beats
        # indexing's accumulating index_put on CPU (benchmarks/README.md)
        # a part of a batch (data-parallel) takes its rows and divides by the whole batch size B, so
        # that the parts' terms add up to the whole batch's (BPR's mean and L2's 1/B alike)
        b = len(batch)
        loc = batch.local()
        n = len(loc)
        idx = torch.cat([loc.users, self.num_users + loc.pos, self.num_users + loc.neg])
        rows = F.embedding(idx, out)
        u, i, j = rows.split(n) if n else rows.view(3, 0, rows.shape[-1])
        return {
            "bpr": bpr_loss((u * i).sum(-1), (u * j).sum(-1), total=None if batch.whole else b),
            "reg": self.reg * l2_reg(F.embedding(idx, e0), batch_size=b),
        }

    def extra_repr(self) -> str:
        return f"users={self.num_users}, items={self.num_items}, dim={self.dim}"


INITS = ("normal", "xavier")


def check_init(init: str, init_std: float) -> None:
    """Validate a config's layer-0 initialisation fields (``init`` and ``init_std``)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if not init_std > 0:
        raise ValueError(f"init_std must be > 0, got {init_std}")


def ssl_term(
    batch: Batch, z1: torch.Tensor, z2: torch.Tensor, num_users: int, temperature: float, weight: float
) -> torch.Tensor:
    """weight · (InfoNCE(z1_u, z2_u) + InfoNCE(z1_i, z2_i)) over the batch's unique users and positive items.

    z1, z2 (N, d): two views of every node. The user and item rows of a view are gathered at once
    (each gather's backward is a zero-filled N x d gradient plus a scatter).
    """
    users = torch.unique(batch.users)
    rows = torch.cat([users, torch.unique(batch.pos) + num_users])
    a, b = F.embedding(rows, z1), F.embedding(rows, z2)
    n = len(users)
    if batch.whole:
        return weight * (info_nce(a[:n], b[:n], temperature) + info_nce(a[n:], b[n:], temperature))
    # a part: its share of the anchor rows, against every node of the whole batch (exact: the parts add up)
    nu, ni = batch.rows(n), batch.rows(len(rows) - n)
    return weight * (
        info_nce(a[:n], b[:n], temperature, anchors=nu) + info_nce(a[n:], b[n:], temperature, anchors=ni)
    )
