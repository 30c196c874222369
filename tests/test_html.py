"""The HTML report: one self-contained page from a results folder written in the runner's format."""

from __future__ import annotations

import base64
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments import studies
from unlearnrec.experiments.report.html import render_html
from unlearnrec.experiments.results import load_records, write_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cell(
    experiment,
    dataset,
    backbone,
    method,
    label,
    *,
    ratio=1.0,
    seed=0,
    recall=0.2,
    mi_bf=5.0,
    seconds=1.0,
    status="ok",
    edges=6040,
    train=726_000,
    config=None,
    study="main",
):
    """One line as the runner writes it (``cell.base_record`` + ``cell.run_cell``)."""
    rec = {
        "kind": "cell",
        "experiment": experiment,
        "study": study,
        "cell": f"{experiment}-{dataset}-{backbone}-{label}-{ratio}-{seed}",
        "dataset": dataset,
        "backbone": backbone,
        "ratio": ratio,
        "seed": seed,
        "method": method,
        "label": label,
        "method_config": config or {},
        "hashes": {"clean": "c", "attacked": "a"},
        "device": "cpu",
        "versions": {"unlearnrec": "0.1.0", "torch": "2.13.0+cpu", "python": "3.11"},
        "time": "2026-01-01T00:00:00+00:00",
        "status": status,
    }
    if status != "ok":
        rec["error"] = "RuntimeError: boom"
        return rec
    rec.update(
        {
            "metrics": {
                "recall@20": recall,
                "ndcg@20": recall * 1.4,
                "mi_bf": mi_bf,
                "mi_ng": mi_bf * 0.6,
                "auc": 0.55,
                "w1_to_ref": 0.01,
            },
            "seconds": seconds,
            "peak_memory_mb": 12.5,
            "prepare_seconds": 30.0 if method == "unlearnrec" else 0.0,
            "prepare_peak_memory_mb": 0.0,
            "prepare_cached": False,
            "info": {},
            "attack": {"edges": edges, "fraction_of_train": edges / train, "key": "k"},
            "model": {"train_seconds": 100.0, "best_epoch": 40, "epochs_run": 55},
        }
    )
    return rec


def _write_jsonl(path: Path, records, torn_tail: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    if torn_tail:
        text += '{"kind": "cell", "status": "o'  # a run killed mid-write
    path.write_text(text)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "runs"
    main = [
        _cell("ml-1m-table2", "ml-1m", "lightgcn", "retrain", "Retrain", recall=0.2250, seconds=900.0),
        _cell(
            "ml-1m-table2",
            "ml-1m",
            "lightgcn",
            "unlearnrec",
            "UnlearnRec(0)",
            recall=0.2240,
            seconds=0.4,
            status="error",
        ),  # failed first ...
        _cell(
            "ml-1m-table2",
            "ml-1m",
            "lightgcn",
            "unlearnrec",
            "UnlearnRec(0)",
            recall=0.2240,
            seconds=0.4,
            config={"finetune_epochs": 0},
        ),  # ... then retried and finished: counted once
        _cell("ml-1m-table2", "ml-1m", "lightgcn", "gif", "<GIF>", recall=0.1, seconds=9.0, status="error"),
        _cell(
            "ml-1m-table2", "ml-100k", "lightgcn", "retrain", "Retrain", seconds=30.0, edges=470, train=80_000
        ),
        _cell(
            "ml-1m-table2",
            "ml-100k",
            "lightgcn",
            "unlearnrec",
            "UnlearnRec(0)",
            seconds=0.1,
            edges=470,
            train=80_000,
        ),
    ]
    _write_jsonl(root / "ml-1m-table2" / "results.jsonl", main, torn_tail=True)
    (root / "ml-1m-table2" / "experiment.toml").write_text('name = "ml-1m-table2"\ndatasets = ["ml-1m"]\n')
    ablation = [
        _cell("ml-1m-ablation", "ml-1m", "simgcl", "unlearnrec", lab, mi_bf=v, study="ablation")
        for lab, v in (("Full", 3.3), ("w/o L_u", 1.2), ("w/o L_p", 3.0), ("w/o L_c", 3.1))
    ]
    _write_jsonl(root / "ablation" / "results.jsonl", ablation)
    ratio = [
        _cell("ml-1m-sweep", "ml-1m", "lightgcn", m, lab, ratio=r, edges=int(6040 * r), study="ratio")
        for r in (0.12, 0.6, 1.0)
        for m, lab in (("retrain", "Retrain"), ("unlearnrec", "UnlearnRec(3)"))
    ]
    _write_jsonl(root / "ratio" / "results.jsonl", ratio)
    # studies as the driver writes them, and an encoder cache with its pre-training curve
    rng = np.random.default_rng(0)
    scores = {m: {s: rng.normal(size=50) for s in studies.EDGE_SETS} for m in ("original", "retrain", "ours")}
    write_study(
        root / "ml-1m-table2", "scores", "ml-1m-lightgcn", studies.summarize_distributions(scores, bins=8)
    )
    case = {
        "user": 1,
        "item": 2,
        "k": 2,
        "similar": [3, 4],
        "similarity": [0.9, 0.7],
        "scores": {
            "original": {"forgotten": 1.0, "similar": [0.5, 0.4]},
            "ours": {"forgotten": -1.0, "similar": [0.1, 0.2]},
        },
        "delta": {"original": 0.0, "ours": -0.3},
    }
    write_study(root / "ml-1m-table2", "case", "ml-1m-lightgcn", case)
    enc = root / "ml-1m-table2" / "prepared" / "abc123"
    enc.mkdir(parents=True)
    (enc / "meta.json").write_text(
        json.dumps(
            {
                "kind": "unlearnrec-encoder",
                "dataset": "ml-1m",
                "backbone": "lightgcn",
                "config": {"epochs": 3, "use_lu": True},
                "history": [
                    {"epoch": e, "total": 1.0 / e, "unlearn": 0.5 / e, "steps": 4} for e in (1, 2, 3)
                ],
            }
        )
    )
    return root


@pytest.fixture(scope="module")
def rendered(results) -> tuple[Path, str]:
    """The page, rendered once for the module (figures take a few seconds)."""
    out = results.parent / "out" / "report.html"
    return out, render_html(results, out, title="test report")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "data", "action", "poster"):
                self.refs.append((tag, k, v or ""))


def test_page_is_self_contained(rendered):
    out, page = rendered
    assert out.read_text() == page and "<title>test report</title>" in page
    assert out.stat().st_mode & 0o644 == 0o644  # readable by others, like any shared report
    parser = _Refs()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    imgs = [v for tag, k, v in parser.refs if k == "src"]
    assert len(imgs) >= 4  # ratio, efficiency, scores, case, pre-training
    for tag, k, v in parser.refs:
        if k == "href":
            assert v.startswith("#"), f"external link {v}"
        else:
            assert tag == "img" and v.startswith("data:image/png;base64,"), f"external {k}={v[:40]}"
            assert base64.b64decode(v.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "url(" not in page and "@import" not in page and "http://" not in page and "https://" not in page


def test_tables_and_paper_numbers(rendered):
    page = rendered[1]
    for heading in (
        "Table 2",
        "Ablation (Table 3)",
        "Unlearning ratio (Table 5)",
        "Efficiency (Table 4",
        "Score distributions",
        "Pre-training curve",
        "Case study",
        "Configs and versions",
    ):
        assert heading in page, heading
    assert page.count("<table>") >= 6
    # the paper's Table 2 beside ours (docs/method.md §8: ML-1M LightGCN Retrain / UnlearnRec Recall@20)
    assert "0.2287" in page and "0.2282" in page and "0.2250" in page
    assert "-1.6%" in page  # (0.2250 - 0.2287) / 0.2287
    assert "1,208" in page and "0.31" in page  # Table 4: Retrain / Ours(0) seconds on ML-1M
    assert "not restated in docs/method.md" in page  # Tables 3 and 5: no invented paper numbers
    assert "w/o L_u" in page and "0.83%" in page  # ablation rows; the request's share of the edges
    assert "2.13.0+cpu" in page and 'datasets = ["ml-1m"]' in html.unescape(page)  # versions and configs
    assert "&lt;GIF&gt;" not in page and "<GIF>" not in page  # a cell that only failed is not reported


def test_records_are_deduplicated_and_normalized(results):
    recs = load_records(results)
    main = [r for r in recs if r["experiment"] == "ml-1m-table2"]
    assert len(main) == 4  # the failed-then-finished cell once, the failed cell not at all, torn line skipped
    r = next(r for r in main if r["label"] == "UnlearnRec(0)" and r["dataset"] == "ml-1m")
    assert r["recall@20"] == pytest.approx(0.2240) and r["train_edges"] == 726_000
    assert r["request_fraction"] == pytest.approx(6040 / 726_000)


def test_without_figures_and_errors(results, tmp_path):
    page = render_html(results, figures=False)
    assert "<img" not in page and "0.2287" in page
    with pytest.raises(UnlearnRecError):
        render_html(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnlearnRecError):
        render_html(empty)
    with pytest.raises(UnlearnRecError):
        write_study(empty, "nonsense", "x", {})


def test_records_go_to_the_section_their_grid_names():
    """The section comes from the grid's ``study`` key, recorded with each cell; records written before
    the key go by their grid's exact name or their request kind, never by a substring of the name."""
    from unlearnrec.experiments.report.html import study_of

    assert study_of({"study": "ablation", "experiment": "anything"}) == "ablation"
    assert study_of({"experiment": "ml-1m-ablation-cpu"}) == "ablation"  # a committed grid before the key
    assert study_of({"experiment": "my-ablation-ratio-efficiency"}) == "main"  # no substring matching
    assert study_of({"experiment": "sweep", "request": {"kind": "users", "ratio": 0.1}}) == "ratio"


def test_one_table_per_dataset_and_backbone_and_distinct_encoder_headings(rendered, results):
    page = rendered[1]
    # ML-1M and ML-100K LightGCN rows of Table 2 are two tables under their own headings
    main = page[page.index('id="main"') : page.index('id="ablation"')]
    assert (
        main.count("<table>") == 2
        and "<h3>ML-1M · LightGCN</h3>" in main
        and "<h3>ML-100K · LightGCN</h3>" in main
    )
    # two encoders with the same switches: their pre-training headings still differ
    enc = results / "ml-1m-table2" / "prepared"
    try:
        (enc / "def456").mkdir()
        (enc / "def456" / "meta.json").write_text((enc / "abc123" / "meta.json").read_text())
        again = render_html(results, None, figures=False)
    finally:
        import shutil

        shutil.rmtree(enc / "def456")
    heads = [h for h in re.findall(r"<h4>(.*?)</h4>", again) if "ml-1m / lightgcn: epochs=3" in h]
    assert len(heads) == 2 and len(set(heads)) == 2, heads
