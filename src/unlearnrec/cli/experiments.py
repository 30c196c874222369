"""``experiment`` (run, resume or inspect a grid), ``report`` (its tables and page) and ``study``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unlearnrec.cli.common import K, add_checkpoint_every, check_out, progress


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def cmd_status(args) -> int:
    """``experiment GRID --out DIR --status``: done and pending cells, with (estimated) seconds."""
    from unlearnrec.experiments.results import read_history
    from unlearnrec.experiments.runner import load_config
    from unlearnrec.experiments.status import status

    cfg = load_config(args.config)
    history = read_history(args.estimate_from) if args.estimate_from else None
    cells = status(cfg, args.out, args.cache, history=history)
    pending = [c for c in cells if not c.done]
    known = [c.seconds for c in pending if c.seconds is not None]
    summary = {
        "cells": len(cells),
        "done": len(cells) - len(pending),
        "pending": len(pending),
        "estimated_seconds": sum(known),
        "unknown_estimates": len(pending) - len(known),
    }
    attack = [
        {
            "dataset": d,
            "protocol": cfg.protocol,
            "user_ratios": list(cfg.attack_of(d)[0]),
            "item_ratio": cfg.attack_of(d)[1],
        }
        for d in cfg.datasets
        if cfg.request == "adversarial"
    ]
    if args.json:
        rows = [
            {
                "group": c.group.tag,
                "label": c.label,
                "method": c.method,
                "done": c.done,
                "seconds": c.seconds,
                "resumes": c.resumes,
            }
            for c in cells
        ]
        print(json.dumps({**summary, "attack": attack, "cell_status": rows}))
        return 0
    for a in attack:  # the adversarial request each dataset gets (defaults resolved)
        users = "/".join(f"{r:g}" for r in a["user_ratios"])
        print(
            f"attack on {Path(a['dataset']).name}: {a['protocol']} protocol, "
            f"share of users {users}, of items {a['item_ratio']:g}"
        )
    for c in cells:
        state = "done   " if c.done else "pending"
        what = "took" if c.done else "est."
        resumes = f" (resumes: {c.resumes})" if c.resumes else ""
        print(f"{state} {c.group.tag:<40} {c.label:<28} {what} {_fmt_seconds(c.seconds)}{resumes}")
    n_unknown = summary["unknown_estimates"]
    if not pending:
        left = "nothing pending"
    elif not known:
        where = ", ".join([str(args.out), *args.estimate_from])
        hint = "" if args.estimate_from else "; --estimate-from experiments/results uses the committed runs"
        left = f"{len(pending)} pending, no estimate (no finished cell of their methods in {where}){hint}"
    else:
        unknown = f", {n_unknown} without an estimate" if n_unknown else ""
        left = f"{len(pending)} pending, about {_fmt_seconds(summary['estimated_seconds'])}{unknown}"
    print(f"{summary['done']} of {summary['cells']} cells done; {left}")
    return 0


def cmd_experiment(args) -> int:
    if args.status:
        return cmd_status(args)
    if args.estimate_from:
        from unlearnrec.errors import UnlearnRecError

        raise UnlearnRecError("--estimate-from only applies with --status (it runs nothing)")
    from unlearnrec.experiments.grid import groups
    from unlearnrec.experiments.report import report
    from unlearnrec.experiments.runner import RESULTS, load_config, run_experiment

    if args.ray is not None:
        from unlearnrec.experiments.ray_runner import import_ray

        import_ray()  # the missing extra is the first thing to say
    cfg = load_config(args.config)
    # an existing --out is how a grid resumes, so it may exist; it may never be (or hold) an input
    check_out(args, {"CONFIG": args.config, "--data-dir": args.data_dir}, must_be_new=False)
    total = len(groups(cfg)) * len(cfg.methods)
    bar = progress(total, f"experiment {cfg.name}", not args.quiet)

    def on_cell(rec: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{rec['dataset']}/{rec['backbone']}/{rec['label']}: {rec['status']}")

    if args.ray is None:
        records = run_experiment(
            args.config,
            args.out,
            data_dir=args.data_dir,
            device=args.device,
            on_cell=on_cell,
            cache_dir=args.cache,
            checkpoint_every=args.checkpoint_every,
        )
    else:
        from unlearnrec.experiments.ray_runner import run_experiment_ray

        def on_progress(counts: dict[str, int]) -> None:
            bar.set_description_str(f"experiment {cfg.name} ({counts['running']} running)")

        records = run_experiment_ray(
            args.config,
            args.out,
            address=args.ray,
            data_dir=args.data_dir,
            device=args.device,
            on_cell=on_cell,
            on_progress=on_progress,
            cache_dir=args.cache,
        )
    bar.close()
    ok = sum(r["status"] == "ok" for r in records)
    failed = [r for r in records if r["status"] != "ok"]
    summary = {
        "out": str(args.out),
        "cells": total,
        "ran": ok,
        "failed": len(failed),
        "skipped": total - len(records),
        "results": str(Path(args.out) / RESULTS),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{cfg.name}: {total} cells, {ok} ran, {len(failed)} failed, {summary['skipped']} already done")
        for r in failed:
            print(f"  failed: {r['dataset']}/{r['backbone']}/{r['label']}: {r.get('error')}")
        print(f"results in {summary['results']}\n")
        print(report(args.out, "markdown"), end="")
    return 1 if failed else 0


def cmd_report(args) -> int:
    from unlearnrec.errors import UnlearnRecError
    from unlearnrec.experiments.report import table_cells, to_csv, to_markdown
    from unlearnrec.experiments.runner import RESULTS, read_results

    if args.html:
        if Path(args.html).is_dir():
            raise UnlearnRecError(f"--html {args.html} is a directory: name the HTML file to write")
        check_out(args, {"DIR/" + RESULTS: Path(args.dir) / RESULTS}, option="--html", must_be_new=False)
    if args.html and not (Path(args.dir) / RESULTS).is_file():
        # a parent folder of several experiment folders: the HTML page gathers them all
        from unlearnrec.experiments.report.html import render_html

        render_html(args.dir, args.html)
        print(f"wrote {args.html}", file=sys.stderr)
        return 0
    if not (Path(args.dir) / RESULTS).is_file():
        raise UnlearnRecError(
            f"no {RESULTS} in {args.dir} (run 'unlearnrec experiment CONFIG --out {args.dir}')"
        )
    records = read_results(args.dir)
    if args.json:
        cells = [
            {
                "dataset": c.dataset,
                "backbone": c.backbone,
                "ratio": c.ratio,
                "method": c.method,
                "label": c.label,
                "seeds": c.seeds,
                **{k: c.mean(k) for k in c.values},
            }
            for c in table_cells(records)
        ]
        print(json.dumps(cells))
        return 0
    parts = []
    if args.markdown or not args.csv:
        parts.append(to_markdown(records, args.layout))
    if args.csv:
        parts.append(to_csv(records))
    print("\n".join(parts), end="")
    if args.save:
        Path(args.dir, "table2.md").write_text(to_markdown(records, args.layout))
        Path(args.dir, "table2.csv").write_text(to_csv(records))
    if args.html:
        from unlearnrec.experiments.report.html import render_html

        render_html(args.dir, args.html)
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def cmd_study(args) -> int:
    from unlearnrec.experiments.study_runner import run_studies

    paths = run_studies(
        args.config,
        args.out,
        data_dir=args.data_dir,
        device=args.device,
        labels=args.labels,
        k=args.k,
        cache_dir=args.cache,
    )
    if args.json:
        print(json.dumps({"written": [str(p) for p in paths]}))
    else:
        print(f"{len(paths)} study files written under {Path(args.out) / 'studies'}")
    return 0


def register(sub, common) -> None:
    """Add ``experiment`` and ``report`` to the ``unlearnrec`` parser."""
    e = sub.add_parser("experiment", help="run (or resume) a TOML grid of datasets x backbones x methods")
    e.add_argument("config", help="experiment TOML (see experiments/)")
    e.add_argument("--out", required=True, help="output directory (results.jsonl)")
    e.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the config's)")
    e.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="cache of models, attacks, prepared methods (default: $UNLEARNREC_CACHE, ~/.cache/unlearnrec)",
    )
    add_checkpoint_every(e, "in the cache (partial/, scratch/)")
    e.add_argument(
        "--status",
        action="store_true",
        help="list done and pending cells with (estimated) times; run nothing",
    )
    e.add_argument(
        "--estimate-from",
        action="append",
        default=[],
        metavar="PATH",
        help="with --status: also estimate from the finished cells of earlier runs (a results.jsonl or "
        "a folder searched for them, e.g. experiments/results); repeatable",
    )
    e.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run the grid as Ray tasks: 'auto' (the cluster of RAY_ADDRESS or of 'ray start' on this "
        "machine, else a local one) or HOST:PORT of a cluster's head; --cache must be a path every "
        "node sees (needs the cluster extra: pip install 'unlearnrec[cluster]')",
    )
    common(e)
    e.set_defaults(func=cmd_experiment)

    r = sub.add_parser("report", help="the Table 2 layout from an experiment directory")
    r.add_argument("dir", help="experiment output directory")
    r.add_argument("--csv", action="store_true", help="print CSV (with --markdown: both)")
    r.add_argument("--markdown", action="store_true", help="print Markdown (the default)")
    r.add_argument("--save", action="store_true", help="also write table2.md and table2.csv into DIR")
    r.add_argument(
        "--layout",
        choices=("auto", "wide", "long"),
        default="auto",
        help="Markdown layout: wide = the paper's (methods side by side), long = a row per method "
        "with its Recall as a share of Retrain's; auto (default): wide up to 4 methods",
    )
    r.add_argument(
        "--html", default=None, metavar="PATH", help="also write every table and figure to one HTML page"
    )
    common(r, data=False)
    r.set_defaults(func=cmd_report)

    s = sub.add_parser("study", help="score distributions and case study (Fig. 2-3, 6) of a finished grid")
    s.add_argument("config", help="the experiment TOML that produced --out")
    s.add_argument("--out", required=True, help="the experiment output directory")
    s.add_argument("--labels", nargs="+", default=None, help="only these method labels")
    s.add_argument("--k", type=K, default=10, help="similar items in the case study (1..100000)")
    s.add_argument("--device", default=None)
    s.add_argument("--cache", default=None, metavar="DIR", help="the runner's cache (default: the runner's)")
    common(s)
    s.set_defaults(func=cmd_study)
