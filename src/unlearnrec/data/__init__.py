"""Datasets, interactions, graphs, splits, sampling and unlearning requests."""

from unlearnrec.data.graph import Graph, normalized_adjacency
from unlearnrec.data.interactions import Interactions

__all__ = ["Graph", "Interactions", "normalized_adjacency"]
