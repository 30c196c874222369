"""CLI commands for requests and proof: ``sample-request``, ``verify`` and ``ledger``."""

from __future__ import annotations

import json

import numpy as np

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import RequestError
from unlearnrec.unlearn.base import Request


def add_request_args(p, required: bool = True) -> None:
    """``--edges FILE | --user U [U ...] | --item I [I ...]`` (exactly one)."""
    from unlearnrec.cli import ID

    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--edges", help="file of 'user item' lines (TSV/CSV, optional header)")
    g.add_argument("--user", type=ID, nargs="+", help="forget these users entirely")
    g.add_argument("--item", type=ID, nargs="+", help="forget these items entirely")


def request_from_args(train: Interactions, args) -> Request:
    """The :class:`Request` named on the command line, validated against ``train``."""
    from unlearnrec.data.requests import read_edges_file

    if getattr(args, "edges", None):
        users, items = read_edges_file(args.edges)
        return Request.of_edges(train, users, items)
    if getattr(args, "user", None):
        return Request.of_users(train, args.user)
    if getattr(args, "item", None):
        return Request.of_items(train, args.item)
    raise RequestError("no request given: use --edges FILE, --user U ... or --item I ...")


def cmd_sample_request(args) -> int:
    from unlearnrec.cli import check_out
    from unlearnrec.data.requests import sample_edges, write_edges_file
    from unlearnrec.model import TrainedModel

    check_out(args, {"--model": args.model})
    model = TrainedModel.load(args.model)
    edges = sample_edges(model.train, args.ratio, np.random.default_rng(args.seed))
    write_edges_file(edges, args.out)
    print(
        json.dumps({"edges": len(edges), "out": args.out})
        if args.json
        else f"{len(edges)} random training edges ({args.ratio:.2%}) written to {args.out}"
    )
    return 0


def cmd_verify(args) -> int:
    from unlearnrec.model import TrainedModel
    from unlearnrec.runtime import resolve_device
    from unlearnrec.unlearn.ledger import Ledger
    from unlearnrec.unlearn.verify import verify_forgetting

    ledger = Ledger(args.ledger) if args.ledger else None
    if ledger is not None:
        ledger.require()  # a missing or empty ledger is an error, never "0 of 0 entries"
    device = resolve_device(args.device)
    model = TrainedModel.load(args.model, device=device)
    original = TrainedModel.load(args.original, device=device) if args.original else None
    reference = original if original is not None else model
    if original is None and not args.edges:
        raise RequestError("verifying a whole-user or whole-item request needs --original (the model before)")
    request = request_from_args(reference.train if original is not None else _with_edges(model, args), args)
    known, negatives = _known_edges(model, request, args.data_dir)
    v = verify_forgetting(
        model,
        request,
        original=original,
        ledger=ledger,
        min_mi_ng=args.min_mi_ng,
        seed=args.seed,
        known=known,
    )
    if args.json:
        print(json.dumps({"passed": v.passed, "checks": v.checks, "negatives": negatives}, default=float))
    else:
        print(f"MI negatives: {negatives}")
        for c in v.checks:
            mark = {True: "PASS", False: "FAIL", None: "n/a "}[c["passed"]]
            print(f"[{mark}] {c['name']}: {c['detail']}")
        print("verified: the request is honoured" if v.passed else "NOT verified")
    return 0 if v.passed else 1


def _known_edges(model, request: Request, data_dir) -> tuple[Interactions | None, str]:
    """Every edge ever seen (train ∪ val ∪ test ∪ request), as ``forget`` uses for MI-NG's non-edges.

    With the model's dataset at hand, verify draws the same non-edges as ``forget`` (same seed), so
    both report the same MI-NG; without it the non-edges avoid only the model's graph and the
    request, which can change a few draws (and MI-NG in its second or third decimal).
    """
    from unlearnrec.errors import UnlearnRecError

    try:
        data = model.load_dataset(data_dir)
    except UnlearnRecError as e:
        return None, (
            f"drawn avoiding the model's graph and the request only ({e}); "
            "MI-NG can differ slightly from the one 'forget' printed"
        )
    known = data.train.union(data.val).union(data.test).union(request.edges)
    return (
        known,
        f"drawn avoiding every edge of {model.dataset} (as 'forget' does: same MI-NG for the same seed)",
    )


def _with_edges(model, args) -> Interactions:
    """Without the original, an edge request is checked against the model's graph + the edges."""
    from unlearnrec.data.requests import read_edges_file

    users, items = read_edges_file(args.edges)
    return model.train.union(
        Interactions.from_pairs(users, items, model.train.num_users, model.train.num_items, dedupe=True)
    )


def cmd_ledger(args) -> int:
    from unlearnrec.unlearn.ledger import Ledger

    led = Ledger(args.path)
    n = led.require()
    entries = led.entries()
    if args.json:
        print(json.dumps({"entries": entries, "intact": True}))
    else:
        print(f"{args.path}: {n} entries, hash chain intact")
        for e in entries:
            print(
                f"  #{e['seq']} {e['time']} {e.get('method', '?')}: {e.get('edges', '?')} edges, "
                f"users {e.get('users', [])}, items {e.get('items', [])}, "
                f"request {e['request_fingerprint'][:12]}"
            )
    return 0


def register(sub, common) -> None:
    from unlearnrec.cli import SEED, number

    s = sub.add_parser("sample-request", help="write a random request of training edges to a file")
    s.add_argument("--model", required=True)
    s.add_argument("--ratio", type=number(float, "(0, 1)"), default=0.005, help="share of training edges")
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    common(s, data=False)
    s.set_defaults(func=cmd_sample_request)

    v = sub.add_parser("verify", help="prove that a model forgot a request (exit 1 if not)")
    v.add_argument("--model", required=True, help="the model that should have forgotten")
    v.add_argument(
        "--original", default=None, help="the model before forgetting (for MI-BF and node requests)"
    )
    add_request_args(v)
    v.add_argument("--ledger", default=None, help="JSONL ledger that must record the request")
    v.add_argument("--min-mi-ng", type=number(float, ">= 0"), default=1.0)
    v.add_argument("--seed", type=SEED, default=0, help="seed of MI-NG's random non-edges (as forget's)")
    v.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    common(v)
    v.set_defaults(func=cmd_verify)

    led = sub.add_parser("ledger", help="show and check a forgetting ledger")
    led.add_argument("path")
    common(led, data=False)
    led.set_defaults(func=cmd_ledger)
