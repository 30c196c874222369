"""SimGCL (Yu et al., SIGIR 2022): LightGCN plus InfoNCE between two views made by uniform noise.

At every layer l the perturbed propagation adds Δ = sign(E^l) ⊙ ε · normalize(U(0, 1)) to E^l before
propagating further: each noise row has norm ε and lies in the embedding's orthant (the paper's noise).
As in the paper (and SELFRec), the readout is the mean of layers 1..L, layer 0 left out, for the clean
propagation (used by BPR and evaluation) and for the two noisy views (used by InfoNCE).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnrec.backbones.base import Batch
from unlearnrec.backbones.lightgcn import LightGCN, LightGCNConfig
from unlearnrec.data.graph import Graph, propagate
from unlearnrec.train.losses import info_nce


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

    def __post_init__(self):
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
        x = e0
        acc = None
        for _ in range(self.layers):
            x = propagate(adj, x)
            if perturb:
                x = x + self.noise(x, generator)  # the noise enters the next layer's propagation
            acc = x if acc is None else acc + x
        return acc / self.layers

    def noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """sign(x) ⊙ ε · normalize(U(0, 1)) (N, d): rows of norm ε (where x has no zero), sign of x.

        Carries no gradient (that of sign is zero anyway), so it is built in place without autograd.
        """
        dev = generator.device if generator is not None else x.device
        with torch.no_grad():
            u = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
            norm = torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min_(1e-12)
            u.mul_(self.config.eps / norm).mul_(torch.sign(x))
        return u

    def ssl_loss(
        self, graph: Graph, batch: Batch, e0: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """λ (InfoNCE(z1_u, z2_u) + InfoNCE(z1_i, z2_i)) over the batch's unique users and positive items."""
        z1 = self.readout(graph.adj, e0, generator, perturb=True)
        z2 = self.readout(graph.adj, e0, generator, perturb=True)
        users = torch.unique(batch.users)
        items = torch.unique(batch.pos) + self.num_users
        t = self.config.temperature
        return self.config.ssl_weight * (
            info_nce(z1[users], z2[users], t) + info_nce(z1[items], z2[items], t)
        )
