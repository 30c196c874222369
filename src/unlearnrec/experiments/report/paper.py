"""The paper's numbers (docs/method.md §8) that the reports set beside ours, and display names."""

from __future__ import annotations

# docs/method.md §8, Table 2 of the paper: (Recall@20, NDCG@20, MI-BF, MI-NG)
PAPER_TABLE2: dict[tuple[str, str, str], tuple[float, float, float, float]] = {
    ("ml-1m", "lightgcn", "retrain"): (0.2287, 0.3209, 9.79, 6.23),
    ("ml-1m", "lightgcn", "unlearnrec"): (0.2282, 0.3206, 6.51, 4.28),
    ("ml-1m", "simgcl", "retrain"): (0.2336, 0.3325, 6.23, 3.98),
    ("ml-1m", "simgcl", "unlearnrec"): (0.2336, 0.3323, 3.20, 2.36),
    ("ml-1m", "sgl", "retrain"): (0.2339, 0.3328, 20.98, 11.34),
    ("ml-1m", "sgl", "unlearnrec"): (0.2330, 0.3296, 14.03, 9.37),
    ("gowalla", "lightgcn", "retrain"): (0.2407, 0.1584, 7.67, 3.93),
    ("gowalla", "lightgcn", "unlearnrec"): (0.2398, 0.1545, 5.37, 2.81),
    ("gowalla", "simgcl", "retrain"): (0.2605, 0.1703, 15.43, 7.72),
    ("gowalla", "simgcl", "unlearnrec"): (0.2540, 0.1670, 4.35, 1.81),
    ("gowalla", "sgl", "retrain"): (0.2502, 0.1618, 8.75, 4.43),
    ("gowalla", "sgl", "unlearnrec"): (0.2477, 0.1611, 2.63, 1.34),
    ("yelp2018", "lightgcn", "retrain"): (0.0625, 0.0511, 6.26, 3.32),
    ("yelp2018", "lightgcn", "unlearnrec"): (0.0617, 0.0501, 5.64, 3.00),
    ("yelp2018", "simgcl", "retrain"): (0.0648, 0.0531, 11.11, 5.89),
    ("yelp2018", "simgcl", "unlearnrec"): (0.0640, 0.0519, 6.02, 2.50),
    ("yelp2018", "sgl", "retrain"): (0.0635, 0.0512, 9.99, 4.43),
    ("yelp2018", "sgl", "unlearnrec"): (0.0633, 0.0513, 4.09, 2.05),
}
#: the authors' own ML-1M fine-tuning logs (docs/method.md §10): (dataset, backbone, row) ->
#: (Recall@20, NDCG@20 or None). Their Table 2 "UnlearnRec" is one of the fine-tuned rows, picked on
#: the test set.
AUTHORS_LOGS: dict[tuple[str, str, str], tuple[float, float | None]] = {
    ("ml-1m", "lightgcn", "attacked"): (0.2271, 0.3168),
    ("ml-1m", "lightgcn", "ours(0)"): (0.2179, 0.3101),
    ("ml-1m", "lightgcn", "ours(1)"): (0.2282, 0.3206),
    ("ml-1m", "lightgcn", "ours(2)"): (0.2224, None),
    ("ml-1m", "lightgcn", "ours(3)"): (0.2197, None),
    ("ml-1m", "simgcl", "attacked"): (0.2316, None),
    ("ml-1m", "simgcl", "ours(0)"): (0.2311, 0.3288),
}
#: Table 4 (seconds on one RTX 3090): method -> dataset -> seconds. Ours(k) adds about
#: PAPER_FINETUNE_EPOCH_SECONDS[dataset] per fine-tuning epoch (docs/method.md gives no exact Ours(k) row).
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "retrain": {"gowalla": 839, "ml-1m": 1208, "yelp2018": 3030},
    "gif": {"gowalla": 132, "ml-1m": 8.3, "yelp2018": 146},
    "ceu": {"gowalla": 39, "ml-1m": 6.9, "yelp2018": 52},
    "unlearnrec(0)": {"gowalla": 0.43, "ml-1m": 0.31, "yelp2018": 0.47},
}
PAPER_FINETUNE_EPOCH_SECONDS = {"gowalla": 3.4, "ml-1m": 7.0, "yelp2018": 20.0}
PAPER_NOTES = {
    "gowalla": "our gowalla is the larger LightGCN Gowalla, not the paper's: compare shapes, not values",
}
DISPLAY = {
    "ml-1m": "ML-1M",
    "ml-100k": "ML-100K",
    "gowalla": "Gowalla",
    "yelp2018": "Yelp2018",
    "lightgcn": "LightGCN",
    "sgl": "SGL",
    "simgcl": "SimGCL",
}
NOTE = "our Gowalla is not the paper's (docs/method.md §8): compare its rows in shape, not in value"


def paper_method(rec) -> str | None:
    """The paper's Table 2 column a row compares with: its registered method name."""
    m = str(rec.get("method") or rec.get("label") or "").lower()
    return m if m in ("retrain", "unlearnrec") else None
