"""The studies' part of the HTML page: score distributions (Fig. 2-3), pre-training curves (Fig. 5),
the case study and the similar-item shift (Fig. 6), from the studies' JSON outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments.grid import prepared_key
from unlearnrec.experiments.report.blocks import Block, Heading, Note, Table, figure, fmt
from unlearnrec.experiments.results import is_number


def encoder_titles(items: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    """Give every pre-training curve a heading of its own: the labels of the cells that used the
    encoder (found by the prepared-state key of each record), and its key where two still agree."""
    users: dict[str, list[str]] = {}
    for r in records:
        hashes, cfg = r.get("hashes"), r.get("method_config")
        if not (isinstance(hashes, Mapping) and isinstance(cfg, Mapping) and r.get("method")):
            continue
        model = hashes.get("attacked") or hashes.get("model")
        if model:
            key = prepared_key(str(model), str(r["method"]), dict(cfg))
            if r["label"] not in users.setdefault(key, []):
                users[key].append(str(r["label"]))
    pre = [s for s in items if s["kind"] == "pretrain" and s.get("prepared")]
    for s in pre:
        labels = users.get(s["prepared"])
        if labels:
            s["title"] = f"{s['title']} — encoder of {', '.join(labels)}"
    seen: dict[str, int] = {}
    for s in items:
        seen[s.get("title") or s.get("name")] = seen.get(s.get("title") or s.get("name"), 0) + 1
    for s in pre:
        if seen[s["title"]] > 1:
            s["title"] = f"{s['title']} (encoder {s['prepared']})"


def section_studies(items: list[dict[str, Any]], figures: bool) -> tuple[list[Block], list[str]]:
    if not items:
        return [Note("No study outputs (studies/*.json) in this folder.")], []
    blocks: list[Block] = []
    missing: list[str] = []
    renderers: dict[str, Callable[[Any, bool], list[Block]]] = {
        "scores": _study_scores,
        "case": _study_case,
        "pretrain": _study_pretrain,
        "shift": _study_shift,
    }
    titles = {
        "scores": "Score distributions (Fig. 2-3)",
        "pretrain": "Pre-training curve (Fig. 5)",
        "case": "Case study (Fig. 6)",
        "shift": "Similar-item score shift (Fig. 6, all forgotten edges)",
    }
    for kind in ("scores", "pretrain", "case", "shift"):
        its = [s for s in items if s["kind"] == kind]
        if not its:
            continue
        blocks.append(Heading(titles[kind], 3))
        for s in its:
            blocks.append(Heading(str(s.get("title") or s.get("name")), 4))
            try:
                blocks += renderers[kind](s["data"], figures)
            except UnlearnRecError as e:
                missing.append(f"{kind} {s.get('name')}: {e}")
            except (KeyError, TypeError, ValueError) as e:
                missing.append(f"{kind} {s.get('name')}: malformed study data ({e!r})")
    return blocks, missing


def _study_scores(d: dict[str, Any], figures: bool) -> list[Block]:
    sets = list(d["bins"])
    header = ["model", *[f"{s} {k}" for s in sets for k in ("mean", "var")]]
    header += ["forgotten W1 to ref", "forgotten KS to ref"]
    body = []
    for name, per in d["models"].items():
        row = [(str(name), "l")]
        for s in sets:
            st = per.get(s, {})
            row += [(fmt(st.get("mean"), 3), ""), (fmt(st.get("var"), 3), "")]
        f = per.get("forgotten", {})
        row += [(fmt(f.get("w1_to_ref"), 3), ""), (fmt(f.get("ks_to_ref"), 3), "")]
        body.append(row)
    out: list[Block] = [Table(header, body, f"Raw scores ŷ; reference = {d.get('reference')}")]
    if figures:
        from unlearnrec.experiments.report.plots import plot_score_distributions

        out.append(
            figure(
                plot_score_distributions(d),
                "score distributions",
                "Density of the scores of forgotten, retained-positive and negative edges per model; dashed: "
                "the retrained model's forgotten edges (the target).",
            )
        )
    return out


def _study_pretrain(d: Any, figures: bool) -> list[Block]:
    hist = d["history"] if isinstance(d, dict) else d
    last = hist[-1] if hist else {}
    from unlearnrec.experiments.report.plots import loss_terms  # matplotlib is imported only to draw

    keys = [k for k in loss_terms(hist) if is_number(last.get(k))]
    out: list[Block] = [
        Table(
            ["epochs", *keys],
            [[(str(len(hist)), "l")] + [(fmt(last[k]), "") for k in keys]],
            "Last pre-training epoch",
        )
    ]
    if figures:
        from unlearnrec.experiments.report.plots import plot_pretrain_curve

        out.append(
            figure(plot_pretrain_curve(hist), "pre-training curve", "Loss terms per pre-training epoch.")
        )
    return out


def _study_case(d: dict[str, Any], figures: bool) -> list[Block]:
    names = list(d["scores"])
    body = [
        [(f"{d['item']} (forgotten)", "l"), ("—", "")]
        + [(fmt(d["scores"][n]["forgotten"], 3), "") for n in names]
    ]
    for k, j in enumerate(d["similar"]):
        body.append(
            [(str(j), "l"), (fmt(d["similarity"][k], 3), "")]
            + [(fmt(d["scores"][n]["similar"][k], 3), "") for n in names]
        )
    body.append(
        [("mean Δ of similar items vs original", "l"), ("", "")]
        + [(fmt(d["delta"].get(n), 3), "") for n in names]
    )
    out: list[Block] = [
        Table(
            ["item", "cosine", *names],
            body,
            f"User {d['user']}: scores of the forgotten item and its {d['k']} most similar items",
        )
    ]
    if figures:
        from unlearnrec.experiments.report.plots import plot_case_study

        out.append(figure(plot_case_study(d), "case study"))
    return out


def _study_shift(d: dict[str, Any], figures: bool) -> list[Block]:
    header = ["model", "forgotten mean ŷ", "Δ", "similar-items mean ŷ", "Δ"]
    body = [
        [
            (str(n), "l"),
            (fmt(v.get("forgotten_mean"), 3), ""),
            (fmt(v.get("forgotten_delta"), 3), ""),
            (fmt(v.get("similar_mean"), 3), ""),
            (fmt(v.get("similar_delta"), 3), ""),
        ]
        for n, v in d.items()
    ]
    caption = (
        "Δ against the original model; similar items = the k nearest neighbours of each forgotten item "
        "(cosine, original embeddings), scored for the forgetting user"
    )
    return [Table(header, body, caption)]
