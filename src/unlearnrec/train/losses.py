"""The pure losses moved to :mod:`unlearnrec.losses` (backbones and training both use them); this name stays
for code written against it."""

from unlearnrec.losses import bpr_loss, info_nce, l2_reg, preserving_loss, unlearning_loss

__all__ = ["bpr_loss", "info_nce", "l2_reg", "preserving_loss", "unlearning_loss"]
