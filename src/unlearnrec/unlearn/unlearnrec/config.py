"""The configuration of UnlearnRec: the Influence Encoder, its pre-training and fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass

from unlearnrec.config import check_ranges


@dataclass(frozen=True)
class UnlearnRecConfig:
    """Every knob of UnlearnRec (docs/method.md §3-5), with the ablation switches of the paper's Table 3.

    Influence Encoder (§3): ``ie_layers`` (L_IE), ``alpha`` (α of Eq. 17), ``eta_init`` (η at
    start), ``readout`` (``"sum"`` of H⁰..H^L as the authors' code, or ``"last"`` = H^L as the
    paper's wording), ``readout_layer0`` (include H⁰ itself in the readout; without it Ours(0)
    leaves every node outside the request untouched), ``influence_on`` (``"both"``: Eq. 15-17
    on every node of the request, the paper; ``"items"``: our variant, the request's users get only
    what an untouched node gets and ΔE⁰ lands on its items; see docs/forgetting.md; ``"hubs"``:
    experimental, per request edge the endpoint with more request edges, see
    ``encoder.hub_mask``), ``idm_norm``
    (``"request"``: Â_Δ normalised by the request's own degrees, §2, the paper; ``"graph"``: by the
    training graph's degrees, so an edge weighs the same whatever the request's size).

    Pre-training (§4): ``epochs`` rounds, each with a fresh simulated request of a fraction
    ``ratio`` (ρ) of the training edges and one pass over the residual edges in batches of
    ``batch_size`` (``steps_per_epoch`` > 0 caps the pass); Adam with ``lr`` on H⁰ and η only.
    Loss weights ``lambda_u``, ``lambda_p``, ``lambda_c``; temperatures ``tau_p`` (L_p) and
    ``tau_c`` (L_c); ``contrast_keep``: edge keep rate of L_c's second IDM view;
    ``contrast_nodes``: at most this many of a batch's users (and of its items) enter L_c per step.
    ``pretrain_request``: the shape of the simulated requests: ``"random"`` (the paper: ρ of the
    edges, uniformly) or ``"mixed"`` (issue 25: odd epochs as ``"random"``, even epochs a request shaped
    like the authors' attack on edges the graph already has: for a random half of the users their
    lowest-scored training item, and for a random half of the items their lowest-scored training user,
    scored by the input model; see :func:`~unlearnrec.unlearn.unlearnrec.pretrain.low_score_request`),
    or ``"small"`` (the control of ``"mixed"``: even epochs draw as many edges as that request has,
    uniformly: its size without its shape). ``preserve_target``: what L_p (Eq. 21-22) preserves, in
    pre-training and fine-tuning: ``"original"`` (the paper: the input model's Ē on the whole graph)
    or ``"residual"`` (issue 25: the input model's E⁰ propagated on the residual graph Â_r, the
    "residual graph only" model; L_p then holds the unlearned model near what dropping the edges
    gives, instead of near a model that has fitted them).

    Forgetting (§5): ``finetune_epochs`` = k of Ours(k) (0: Ours(0), no training), with
    ``finetune_lr`` on the MLP and the layer-0 table. Each step propagates once, shared by every
    term. ``finetune_batch_size``: the fine-tuning batch (0: ``batch_size``; λ_p is rescaled by
    ``batch_size / finetune_batch_size`` since L_p is a sum over the batch); ``finetune_steps``:
    steps per fine-tuning epoch (0: one pass over E_r); ``finetune_stop_share`` > 0: stop at the
    first check where the model's validation Recall@20 reaches this share of the input model's
    (needs a validation split, ``UnlearnRec.set_validation``; the request is never read by the
    rule); checks every ``finetune_check_every`` steps (0: after each epoch). ``finetune_epochs``
    is then the maximum. ``finetune_lambda_u``: λ_u of fine-tuning (negative: ``lambda_u``, the
    pre-training's), a forget-time weight of L_u alone; ``finetune_lambda_p`` likewise for L_p at
    the fine-tuning batch (negative: ``lambda_p`` rescaled to it); ``finetune_mlp``: train the MLP
    of Eq. 18 with the layer-0 table (the paper), or the table alone (False: no parameter shared by
    every row moves); ``finetune_min_mi_ng`` > 0: fine-tune only when Ours(0)'s own MI-NG on the
    request (its edges' σ-scores against non-edges of the same users) is at least this, else serve
    Ours(0): edges that still score like interactions after Ours(0) are ordinary ones, which a
    heavy L_u would push below non-interactions at the cost of Recall (0: always).
    ``forget_rule``: the ``influence_on`` rule applied when a request is served (``""``: the
    pre-training's ``influence_on``); a forget-time field, so one pre-trained encoder serves under
    any rule (issue 25: pre-trained under ``"both"``, served under ``"hubs"``).
    ``forget_guard`` (needs ``forget_guard_share`` or ``finetune_stop_share``): when the served
    model's validation Recall@20 (after fine-tuning, if any) is below ``forget_guard_share`` of the
    input model's (0: ``finetune_stop_share``; a guard share alone leaves fine-tuning without its
    stopping rule), Ours(0)'s shift Ẽ⁰ - E⁰ is scaled down, 0.75, 0.5, 0.25, 0 (0: the residual
    graph alone), and the first scale that reaches it is served (none: the state with the highest
    validation Recall). Read: the validation split and the models, never the request's scores.
    ``forget_guard_every`` > 0 (with ``forget_guard`` and fine-tuning): every this many fine-tuning
    steps the state's validation Recall is checked against the guard's share and the latest state
    that reaches it is kept; when the final state falls short the guard serves that one before it
    scales Ours(0)'s shift (0: the final state or Ours(0)'s scales only). Fine-tuning's Recall is not
    monotone in its steps (it dips, then recovers), so this keeps the most fine-tuned state that held.
    The states are checked newest first once the run ends (the final one holds: one check), the same
    state as checking each at its step (``finetune.KEEP_BUDGET``).

    ``finetune_recover_steps`` > 0 (with fine-tuning): after the fine-tuning epochs, this many more
    steps of the backbone's own loss on E_r with L_u weighted ``finetune_recover_lambda_u`` and no L_p
    (issue 25): the forgetting steps cost ranking that training without the request's edges gains
    (Retrain's Recall is above the input's under the authors' attack), and L_p holds the model to the
    input's; the recovery trains the ranking back on the residual edges alone while L_u (0: off) keeps
    the request's edges down. A fresh Adam at ``finetune_lr`` runs them (the forgetting steps' moments,
    from L_u at its fine-tuning weight, would leave the request's nodes nearly frozen). Its steps
    count for ``forget_guard_every`` as the others. ``finetune_recover_hold`` > 0 adds, in every
    recovery step, that weight times the mean squared hinge relu(ŷ - c)² over every edge of E_Δ, c its
    score when the recovery starts: the ranking is trained back while no request edge may climb above
    where the forgetting left it (session 19: it keeps the forgetting, but the ranking then does not come
    back; ``docs/RESULTS.md``, "The recovery with a hold"). ``finetune_recover_warmup`` = W > 0 ramps
    the recovery's learning rate linearly over its first W steps (step i at ``finetune_lr`` x i / W):
    a fresh Adam moves every coordinate with a gradient by about the learning rate from its first step,
    whatever the gradient's size, and those first steps cost validation Recall.

    Ablations: ``use_lu`` / ``use_lp`` / ``use_lc`` switch the three auxiliary losses off (in
    pre-training and, for L_u / L_p, in fine-tuning); ``finetune_epochs = 0`` is "no fine-tuning";
    ``readout = "last"`` is the last-layer readout.
    """

    # Influence Encoder (Eq. 15-18)
    ie_layers: int = 3
    alpha: float = 0.1
    eta_init: float = 0.002
    readout: str = "sum"
    readout_layer0: bool = True
    influence_on: str = "both"
    idm_norm: str = "request"
    # pre-training (Eq. 19-25)
    epochs: int = 10
    ratio: float = 0.2
    pretrain_request: str = "random"
    preserve_target: str = "original"
    batch_size: int = 4096
    steps_per_epoch: int = 0
    lr: float = 1e-3
    lambda_u: float = 0.5
    lambda_p: float = 0.01
    lambda_c: float = 1e-3
    tau_p: float = 1.0
    tau_c: float = 0.2
    contrast_keep: float = 0.95
    contrast_nodes: int = 1024
    use_lu: bool = True
    use_lp: bool = True
    use_lc: bool = True
    # serving a request (§5)
    finetune_epochs: int = 0
    finetune_lr: float = 1e-3
    finetune_batch_size: int = 0
    finetune_steps: int = 0
    finetune_stop_share: float = 0.0
    finetune_check_every: int = 0
    finetune_lambda_u: float = -1.0
    finetune_lambda_p: float = -1.0
    finetune_mlp: bool = True
    finetune_min_mi_ng: float = 0.0
    finetune_recover_steps: int = 0
    finetune_recover_lambda_u: float = 0.0
    finetune_recover_hold: float = 0.0
    finetune_recover_warmup: int = 0
    forget_rule: str = ""
    forget_guard: bool = False
    forget_guard_share: float = 0.0
    forget_guard_every: int = 0

    RANGES = {
        "ie_layers": "[1, 64]",
        "alpha": "[0, 1]",
        "eta_init": ">= 0",
        "epochs": "[0, 100000]",
        "ratio": "(0, 1)",
        "batch_size": "[1, 16777216]",
        "steps_per_epoch": ">= 0",
        "lr": "(0, 100]",
        "lambda_u": ">= 0",
        "lambda_p": ">= 0",
        "lambda_c": ">= 0",
        "tau_p": "> 0",
        "tau_c": "> 0",
        "contrast_keep": "(0, 1]",
        "contrast_nodes": ">= 2",
        "finetune_epochs": "[0, 100000]",
        "finetune_lr": "(0, 100]",
        "finetune_min_mi_ng": ">= 0",
        "finetune_recover_steps": "[0, 10000000]",
        "finetune_recover_lambda_u": ">= 0",
        "finetune_recover_hold": ">= 0",
        "finetune_recover_warmup": "[0, 10000000]",
    }

    def __post_init__(self):
        check_ranges(self)
        if self.readout not in ("sum", "last"):
            raise ValueError(f"readout must be 'sum' or 'last', got {self.readout!r}")
        if self.influence_on not in ("both", "items", "hubs"):
            raise ValueError(f"influence_on must be 'both', 'items' or 'hubs', got {self.influence_on!r}")
        if self.forget_rule not in ("", "both", "items", "hubs"):
            raise ValueError(
                "forget_rule must be '', 'both', 'items' or 'hubs' ('': influence_on), "
                f"got {self.forget_rule!r}"
            )
        if self.forget_guard and self.finetune_stop_share <= 0 and self.forget_guard_share <= 0:
            raise ValueError(
                "forget_guard needs forget_guard_share or finetune_stop_share > 0 "
                "(the validation Recall to keep)"
            )
        if self.pretrain_request not in ("random", "mixed", "small"):
            raise ValueError(
                f"pretrain_request must be 'random', 'mixed' or 'small', got {self.pretrain_request!r}"
            )
        if self.preserve_target not in ("original", "residual"):
            raise ValueError(
                f"preserve_target must be 'original' or 'residual', got {self.preserve_target!r}"
            )
        if self.idm_norm not in ("request", "graph"):
            raise ValueError(f"idm_norm must be 'request' or 'graph', got {self.idm_norm!r}")
        if self.ie_layers < 1:
            raise ValueError("ie_layers must be >= 1")
        if not 0 < self.ratio < 1:
            raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")
        if not 0 < self.contrast_keep <= 1:
            raise ValueError(f"contrast_keep must be in (0, 1], got {self.contrast_keep}")
        if self.epochs < 0 or self.finetune_epochs < 0 or self.steps_per_epoch < 0:
            raise ValueError("epochs, finetune_epochs and steps_per_epoch must be >= 0")
        if self.batch_size <= 0 or self.lr <= 0 or self.finetune_lr <= 0:
            raise ValueError("batch_size, lr and finetune_lr must be > 0")
        for k in ("finetune_batch_size", "finetune_steps", "finetune_check_every", "forget_guard_every"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0 (0: the default), got {getattr(self, k)}")
        if not 0 <= self.finetune_stop_share <= 2:
            raise ValueError(
                f"finetune_stop_share must be in [0, 2] (0: no stopping rule), got {self.finetune_stop_share}"
            )
        if not 0 <= self.forget_guard_share <= 2:
            raise ValueError(
                "forget_guard_share must be in [0, 2] (0: finetune_stop_share), "
                f"got {self.forget_guard_share}"
            )
        if self.contrast_nodes < 2:
            raise ValueError("contrast_nodes must be >= 2")
        if self.tau_p <= 0 or self.tau_c <= 0:
            raise ValueError("tau_p and tau_c must be > 0")
