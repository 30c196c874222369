"""The selection rules and the summary of issue 21's pre-training-length study (pure functions
of the rows :mod:`~unlearnrec.experiments.pretrain_study` writes; nothing is read or run here).

The rules pick a pre-training length on the VALIDATION setup's rows only (fixed before any number of
the evaluated setup was seen): :func:`rule_a`, :func:`rule_b`. :func:`authors_selection` and
:func:`authors_gap_selection` pick on the evaluated request itself, as the authors' code does, and are
reported as references only. Epoch 0 (the untrained encoder) is never a candidate; ties go to the
earlier (cheaper) checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: rule B keeps checkpoints whose validation Recall is at least this share of the reference's
RULE_B_SHARE = 0.95


# ================================================================== selection rules (pure)
@dataclass(frozen=True)
class Selection:
    """The checkpoint a rule picked (``row``; None when there were no candidates) and whether its
    fallback decided (no candidate met the rule's condition)."""

    rule: str
    row: dict | None
    fallback: bool

    @property
    def epoch(self) -> int | None:
        return None if self.row is None else int(self.row["epoch"])


def _candidates(rows: Iterable[dict], k: int) -> list[dict]:
    """The ok checkpoint rows of Ours(k) after at least one pre-training epoch, earliest first."""
    out = [
        r
        for r in rows
        if r.get("kind") == "checkpoint" and r.get("status") == "ok" and r.get("k") == k and r["epoch"] >= 1
    ]
    return sorted(out, key=lambda r: r["epoch"])


def _best(rows: list[dict], key: str) -> dict | None:
    """The row with the highest ``metrics[key]``; a tie goes to the earlier (cheaper) checkpoint."""
    best = None
    for r in rows:  # earliest first: a later row must be strictly better
        if best is None or r["metrics"][key] > best["metrics"][key]:
            best = r
    return best


def rule_a(rows: Iterable[dict], k: int = 0) -> Selection:
    """Rule A (on V): the checkpoint with the highest validation Recall@20 among those whose MI-NG
    on V's request is > 1 (it forgets: the forgotten edges score below same-user non-edges);
    if none is, the one with the highest MI-NG (fallback)."""
    cands = _candidates(rows, k)
    ok = [r for r in cands if r["metrics"]["mi_ng"] > 1.0]
    if ok:
        return Selection("A", _best(ok, "recall@20"), False)
    return Selection("A", _best(cands, "mi_ng"), bool(cands))


def rule_b(
    rows: Iterable[dict], reference_recall: float, k: int = 0, share: float = RULE_B_SHARE
) -> Selection:
    """Rule B (on V): the highest MI-NG among checkpoints whose validation Recall@20 is at least
    ``share`` x ``reference_recall`` (V's residual-graph row, the untrained encoder's Ours(0));
    if none is, the one with the highest validation Recall (fallback)."""
    cands = _candidates(rows, k)
    ok = [r for r in cands if r["metrics"]["recall@20"] >= share * reference_recall]
    if ok:
        return Selection("B", _best(ok, "mi_ng"), False)
    return Selection("B", _best(cands, "recall@20"), bool(cands))


def authors_selection(rows: Iterable[dict], k: int = 0) -> Selection:
    """REFERENCE ONLY: what the authors' code does -- the checkpoint with the best Recall@20 on
    the evaluated request's test split (selection on the evaluated request itself)."""
    return Selection("authors", _best(_candidates(rows, k), "recall@20"), False)


def authors_gap_selection(rows: Iterable[dict], k: int = 0) -> Selection:
    """REFERENCE ONLY: the authors' save rule read as a metric -- their code keeps the checkpoint
    whose gap between negative-edge and request-edge scores on the evaluated request is largest;
    here the checkpoint with the highest MI-NG on the evaluated request."""
    return Selection("authors-gap", _best(_candidates(rows, k), "mi_ng"), False)


def residual_reference(rows: Iterable[dict]) -> dict | None:
    """The epoch-0 Ours(0) row (untrained encoder: the residual graph only), or None."""
    for r in rows:
        if r.get("kind") == "checkpoint" and r.get("status") == "ok" and r["epoch"] == 0 and r["k"] == 0:
            return r
    return None


# ================================================================== the summary (pure)
def checkpoint_rows(rows: Iterable[dict], encoder_key: str | None = None) -> list[dict]:
    """The ok checkpoint rows (of the encoder config ``encoder_key`` if given: one study folder may
    hold several configs' rows), the latest of each (epoch, k), by epoch then k."""
    latest: dict[tuple[int, int], dict] = {}
    for r in rows:
        if encoder_key is not None and r.get("encoder_key") != encoder_key:
            continue
        if r.get("kind") == "checkpoint" and r.get("status") == "ok":
            latest[(int(r["epoch"]), int(r["k"]))] = r
    return [latest[key] for key in sorted(latest)]


def model_row(rows: Iterable[dict]) -> dict | None:
    """The attacked model's row (its ranking before forgetting), or None."""
    return next((r for r in rows if r.get("kind") == "model" and r.get("status") == "ok"), None)


def at_epoch(rows: Iterable[dict], epoch: int | None, k: int) -> dict | None:
    """The row of Ours(k) at ``epoch``, or None."""
    if epoch is None:
        return None
    return next((r for r in rows if r["epoch"] == epoch and r["k"] == k), None)


def selections(evaluated: list[dict], validation: list[dict], k: int) -> list[tuple[Selection, dict | None]]:
    """Rules A and B picked on V's rows of Ours(k), each with E's row at the picked epoch, and the
    authors' selections on E (references: best test Recall, highest MI-NG). V's rule-B reference
    is V's residual-graph row; without it rule B is not applied."""
    out: list[tuple[Selection, dict | None]] = []
    a = rule_a(validation, k)
    out.append((a, at_epoch(evaluated, a.epoch, k)))
    res = residual_reference(validation)
    if res is not None:
        b = rule_b(validation, float(res["metrics"]["recall@20"]), k)
        out.append((b, at_epoch(evaluated, b.epoch, k)))
    for ref in (authors_selection(evaluated, k), authors_gap_selection(evaluated, k)):
        out.append((ref, ref.row))
    return out


def _f(v: Any, digits: int = 4) -> str:
    return "–" if v is None else f"{float(v):.{digits}f}"


def _pct(v: float | None, of: float | None) -> str:
    return "–" if v is None or not of else f"{100 * float(v) / float(of):.1f}%"


def markdown(
    evaluated: list[dict],
    validation: list[dict],
    retrain: dict | None,
    grid_ours0: dict | None = None,
    authors_recall: float = 0.2179,
) -> str:
    """The study's tables: E and V per checkpoint, the selections, and the grid comparison."""
    e_rows, v_rows = checkpoint_rows(evaluated), checkpoint_rows(validation)
    ret = float(retrain["metrics"]["recall@20"]) if retrain else None
    v_res = residual_reference(v_rows)
    v_ref = float(v_res["metrics"]["recall@20"]) if v_res else None
    first = (e_rows or [{}])[0]
    where = f"{first.get('experiment', '?')}: {first.get('dataset', '?')} {first.get('backbone', '?')}"
    lines = [
        f"### E: the evaluated request ({where}; test split)",
        "",
        f"Retrain: Recall@20 {_f(ret)}; the authors' Ours(0): {authors_recall} "
        f"({_pct(authors_recall, 0.2287)} of their Retrain 0.2287).",
        "",
        "| epochs | k | Recall@20 | share of Retrain | NDCG@20 | MI-BF | MI-NG | AUC | forget s "
        "| pre-training s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in e_rows:
        m = r["metrics"]
        lines.append(
            f"| {r['epoch']} | {r['k']} | {_f(m['recall@20'])} | {_pct(m['recall@20'], ret)} "
            f"| {_f(m['ndcg@20'])} "
            f"| {_f(m['mi_bf'], 2)} | {_f(m['mi_ng'], 2)} | {_f(m['auc'], 3)} | {_f(r['forget_seconds'], 2)} "
            f"| {_f(r['pretrain_seconds'], 0)} |"
        )
    if grid_ours0 is not None:
        g = grid_ours0["metrics"]
        mine = at_epoch(e_rows, 10, 0)
        lines += [
            "",
            f"The grid's own 10-epoch Ours(0) row: Recall@20 {_f(g['recall@20'])}, "
            f"NDCG@20 {_f(g['ndcg@20'])}, "
            f"MI-BF {_f(g['mi_bf'], 2)}, MI-NG {_f(g['mi_ng'], 2)}, AUC {_f(g['auc'], 3)}, pre-training "
            f"{_f(grid_ours0.get('prepare_seconds'), 0)} s"
            + (
                f"; this study's epoch-10 Ours(0): Recall@20 {_f(mine['metrics']['recall@20'])}, "
                f"MI-NG {_f(mine['metrics']['mi_ng'], 2)}."
                if mine
                else "; this study has no epoch-10 row yet."
            ),
        ]
    lines += [
        "",
        "### V: the held-out attack (validation split; the test split is not read)",
        "",
        "| epochs | k | val Recall@20 | share of V's residual graph | NDCG@20 | MI-BF | MI-NG | AUC "
        "| pre-training s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in v_rows:
        m = r["metrics"]
        lines.append(
            f"| {r['epoch']} | {r['k']} | {_f(m['recall@20'])} | {_pct(m['recall@20'], v_ref)} "
            f"| {_f(m['ndcg@20'])} "
            f"| {_f(m['mi_bf'], 2)} | {_f(m['mi_ng'], 2)} | {_f(m['auc'], 3)} "
            f"| {_f(r['pretrain_seconds'], 0)} |"
        )
    lines += [
        "",
        "### Selected pre-training lengths (chosen on V) and E at them",
        "",
        "| rule | k | epochs | fallback | V val Recall / MI-NG | E Recall@20 | share of Retrain | E NDCG@20 "
        "| E MI-BF | E MI-NG | E AUC | pre-training s |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ks = sorted({r["k"] for r in e_rows} | {r["k"] for r in v_rows})
    for k in ks:
        for sel, e in selections(e_rows, v_rows, k):
            name = {
                "A": "A",
                "B": "B",
                "authors": "REFERENCE: best test Recall on E",
                "authors-gap": "REFERENCE: highest MI-NG on E",
            }[sel.rule]
            src = sel.row if sel.rule in ("A", "B") else None
            vtxt = (
                "–"
                if src is None
                else f"{_f(src['metrics']['recall@20'])} / {_f(src['metrics']['mi_ng'], 2)}"
            )
            if e is None:
                etxt = "| – | – | – | – | – | – | – |"
            else:
                m = e["metrics"]
                etxt = (
                    f"| {_f(m['recall@20'])} | {_pct(m['recall@20'], ret)} | {_f(m['ndcg@20'])} "
                    f"| {_f(m['mi_bf'], 2)} "
                    f"| {_f(m['mi_ng'], 2)} | {_f(m['auc'], 3)} | {_f(e['pretrain_seconds'], 0)} |"
                )
            fb = "yes" if sel.fallback else "no"
            lines.append(
                f"| {name} | {k} | {sel.epoch if sel.epoch is not None else '–'} | {fb} | {vtxt} {etxt}"
            )
    return "\n".join(lines) + "\n"
