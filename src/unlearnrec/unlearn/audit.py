"""CLI commands for requests and proof: ``sample-request``, ``verify`` and ``ledger``."""

from __future__ import annotations

import json

import numpy as np

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import RequestError
from unlearnrec.unlearn.base import Request


def add_request_args(p, required: bool = True) -> None:
    """``--edges FILE | --user U [U ...] | --item I [I ...]`` (exactly one)."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--edges", help="file of 'user item' lines (TSV/CSV, optional header)")
    g.add_argument("--user", type=int, nargs="+", help="forget these users entirely")
    g.add_argument("--item", type=int, nargs="+", help="forget these items entirely")


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
    from unlearnrec.data.requests import sample_edges, write_edges_file
    from unlearnrec.model import TrainedModel

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
    from unlearnrec.unlearn.ledger import Ledger
    from unlearnrec.unlearn.verify import verify_forgetting

    model = TrainedModel.load(args.model)
    original = TrainedModel.load(args.original) if args.original else None
    reference = original if original is not None else model
    if original is None and not args.edges:
        raise RequestError("verifying a whole-user or whole-item request needs --original (the model before)")
    request = request_from_args(reference.train if original is not None else _with_edges(model, args), args)
    v = verify_forgetting(
        model,
        request,
        original=original,
        ledger=Ledger(args.ledger) if args.ledger else None,
        min_mi_ng=args.min_mi_ng,
    )
    if args.json:
        print(json.dumps({"passed": v.passed, "checks": v.checks}, default=float))
    else:
        for c in v.checks:
            mark = {True: "PASS", False: "FAIL", None: "n/a "}[c["passed"]]
            print(f"[{mark}] {c['name']}: {c['detail']}")
        print("verified: the request is honoured" if v.passed else "NOT verified")
    return 0 if v.passed else 1


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
    n = led.check()
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
    s = sub.add_parser("sample-request", help="write a random request of training edges to a file")
    s.add_argument("--model", required=True)
    s.add_argument("--ratio", type=float, default=0.005)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    common(s, data=False)
    s.set_defaults(func=cmd_sample_request)

    v = sub.add_parser("verify", help="prove that a model forgot a request (exit 1 if not)")
    v.add_argument("--model", required=True, help="the model that should have forgotten")
    v.add_argument(
        "--original", default=None, help="the model before forgetting (for MI-BF and node requests)"
    )
    add_request_args(v)
    v.add_argument("--ledger", default=None, help="JSONL ledger that must record the request")
    v.add_argument("--min-mi-ng", type=float, default=1.0)
    common(v, data=False)
    v.set_defaults(func=cmd_verify)

    led = sub.add_parser("ledger", help="show and check a forgetting ledger")
    led.add_argument("path")
    common(led, data=False)
    led.set_defaults(func=cmd_ledger)
