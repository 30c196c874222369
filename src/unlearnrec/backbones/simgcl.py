"""SimGCL (Yu et al., SIGIR 2022): LightGCN plus InfoNCE between two views made by uniform noise.

At every layer l the perturbed propagation adds Δ = sign(E^l) ⊙ ε · normalize(U(0, 1)) to E^l before
propagating further: each noise row has norm ε and lies in the embedding's orthant (the paper's noise).
As in the paper (and SELFRec), the readout is the mean of layers 1..L, layer 0 left out, for the clean
propagation (used by BPR and evaluation) and for the two noisy views (used by InfoNCE).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnrec.backbones.base import Batch, ssl_term
from unlearnrec.backbones.lightgcn import LightGCN, LightGCNConfig
from unlearnrec.config import check_ranges
from unlearnrec.data.graph import Graph, propagate, propagate_sum


@dataclass(frozen=True)
class SimGCLConfig(LightGCNConfig):
    """LightGCN's fields plus the noise.

    ``eps``: noise norm ε (UnlearnRec/SSLRec 0.2; the SimGCL paper uses 0.1 on Yelp2018 and Amazon-Book).
    ``ssl_weight``: λ (UnlearnRec 1e-2; SimGCL paper 0.5 on Yelp2018). ``temperature``: τ (UnlearnRec
    0.1; SimGCL paper 0.2).
    """

    eps: float = 0.2
    ssl_weight: float = 1e-2
    temperature: float = 0.1

    RANGES = {
        **LightGCNConfig.RANGES,
        "layers": "[1, 64]",
        "eps": ">= 0",
        "ssl_weight": ">= 0",
        "temperature": "> 0",
    }

    def __post_init__(self):
        check_ranges(self)
        super().__post_init__()
        if self.layers < 1:
            raise ValueError("SimGCL needs layers >= 1 (its readout leaves layer 0 out)")
        if self.eps < 0 or self.temperature <= 0 or self.ssl_weight < 0:
            raise ValueError("eps >= 0, temperature > 0 and ssl_weight >= 0 are required")


class SimGCL(LightGCN):
    """Ē = mean(ÂE⁰, ..., Â^L E⁰); the loss adds λ·(InfoNCE_users + InfoNCE_items) of two noisy views."""

    name = "simgcl"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: SimGCLConfig = SimGCLConfig(),
        generator: torch.Generator | None = None,
    ):
        super().__init__(num_users, num_items, config, generator)
        self.config: SimGCLConfig = config

    def readout(
        self,
        adj: torch.Tensor,
        e0: torch.Tensor,
        generator: torch.Generator | None = None,
        perturb: bool = False,
    ) -> torch.Tensor:
        """Mean of layers 1..L (N, d); with ``perturb``, noise from ``generator`` is added at every layer."""
        if not perturb:  # (1/L) Σ_{l=0}^{L-1} Â^l (ÂE⁰) as one fused sum: L products, no pass over the layers
            return propagate_sum(adj, propagate(adj, e0), self.layers - 1, 1.0 / self.layers)
        x = e0
        acc = None
        for _ in range(self.layers):
            x = propagate(adj, x)
            x = x + self.noise(x, generator)  # the noise enters the next layer's propagation
            acc = x if acc is None else acc + x
        return acc / self.layers

    def noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """sign(x) ⊙ ε · normalize(U(0, 1)) (N, d): rows of norm ε (where x has no zero), sign of x.

        Carries no gradient (that of sign is zero anyway), so it is built in place without autograd.
        """
        with torch.no_grad():
            return self.magnitudes(x.shape, x.dtype, x.device, generator).mul_(torch.sign(x))

    def magnitudes(
        self, shape, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """ε · normalize(U(0, 1)) over the last dimension, of any ``shape`` (..., d): |noise| before its sign.

        One draw of shape (k, N, d) takes the same numbers from ``generator`` as k draws of (N, d).
        """
        dev = generator.device if generator is not None else device
        with torch.no_grad():
            u = torch.rand(shape, generator=generator, device=dev, dtype=dtype).to(device)
            norm = torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min_(1e-12)
            return u.mul_(self.config.eps / norm)

    def noisy_views(
        self, adj: torch.Tensor, e0: torch.Tensor, generator: torch.Generator | None, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two perturbed readouts (N, d), equal to two calls of ``readout(adj, e0, generator, perturb=True)``.

        ``first`` is ÂE⁰, computed once and shared by both views (and by the clean readout in
        :meth:`loss`): layer 1 of a view is ÂE⁰ plus its noise, so its product is common to all three.
        The noise of both views is drawn in one call, in the order the two separate calls draw it
        (view 1's layers 1..L, then view 2's), so the generator's stream and the values are the same.
        The noise is added in place to each fresh product (Y + c has Y's gradient).
        """
        layers = self.layers
        mags = self.magnitudes((2, layers, *first.shape), first.dtype, first.device, generator)
        sign = torch.sign(first.detach())
        views = []
        for v in range(2):
            x = torch.addcmul(first, sign, mags[v, 0])  # ``first`` is shared: not in place
            acc = x
            for layer in range(1, layers):
                x = propagate(adj, x)
                with torch.no_grad():  # x is a fresh product nothing has saved: add the noise in place
                    x.addcmul_(torch.sign(x), mags[v, layer])
                acc = acc + x if layer == 1 else acc.add_(x)
            views.append(acc / layers)
        return views[0], views[1]

    def loss_and_output(
        self,
        graph: Graph,
        batch: Batch,
        e0: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The inherited terms (BPR on the clean readout, L2, λ·InfoNCE), with ÂE⁰ computed once.

        The clean readout and the two noisy views all start with the product ÂE⁰; it is computed
        once here (3L products forward and backward become 3L - 2). Same values and the same
        generator stream as :meth:`Backbone.loss` with :meth:`ssl_loss`; also returns the clean readout.
        """
        e0 = self.e0 if e0 is None else e0
        first = propagate(graph.adj, e0)
        out = propagate_sum(graph.adj, first, self.layers - 1, 1.0 / self.layers)
        terms = self.bpr_terms(out, e0, batch)
        terms["ssl"] = self._ssl(batch, *self.noisy_views(graph.adj, e0, generator, first))
        terms["total"] = sum(terms.values())
        return terms, out

    def ssl_loss(
        self, graph: Graph, batch: Batch, e0: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """λ (InfoNCE(z1_u, z2_u) + InfoNCE(z1_i, z2_i)) over the batch's unique users and positive items."""
        return self._ssl(batch, *self.noisy_views(graph.adj, e0, generator, propagate(graph.adj, e0)))

    def _ssl(self, batch: Batch, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return ssl_term(batch, z1, z2, self.num_users, self.config.temperature, self.config.ssl_weight)
