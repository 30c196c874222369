"""``sample-request``, ``verify`` and ``ledger``; the request options every forgetting command shares."""

from __future__ import annotations

import json

import numpy as np

from unlearnrec.cli.common import ID, SEED, check_out, number
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import RequestError
from unlearnrec.runtime import resolve_device
from unlearnrec.unlearn.audit import known_edges, request_of
from unlearnrec.unlearn.base import Request


def add_request_args(p, required: bool = True) -> None:
    """``--edges FILE | --user U [U ...] | --item I [I ...]`` (exactly one)."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--edges", help="file of 'user item' lines (TSV/CSV, optional header)")
    g.add_argument("--user", type=ID, nargs="+", help="forget these users entirely")
    g.add_argument("--item", type=ID, nargs="+", help="forget these items entirely")


def request_from_args(train: Interactions, args) -> Request:
    """The :class:`Request` named on the command line (``--edges`` / ``--user`` / ``--item``)."""
    return request_of(
        train,
        edges_file=getattr(args, "edges", None),
        users=getattr(args, "user", None),
        items=getattr(args, "item", None),
    )


def cmd_sample_request(args) -> int:
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
    known, negatives = known_edges(model, request, args.data_dir)
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
