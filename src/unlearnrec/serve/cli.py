"""``unlearnrec serve``: run the forgetting service; ``unlearnrec serve keys create``: make an API key.

Imports of the ``[serve]`` extra happen inside the commands, so that ``unlearnrec`` works without
it and ``unlearnrec serve`` then says what to install.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unlearnrec.errors import ConfigError


def _need_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"'unlearnrec serve' needs the serve extra ({e.name} is missing): pip install 'unlearnrec[serve]'"
        ) from None


def _db_url(args) -> str:
    from unlearnrec.serve.service import DB_FILE

    if args.db:
        return args.db
    state = Path(args.state)
    return f"sqlite:///{(state / DB_FILE).resolve()}"


def cmd_serve(args) -> int:
    if getattr(args, "serve_command", None) == "keys":
        return cmd_keys(args)
    if getattr(args, "serve_command", None) == "audit":
        _need_extra()
        from unlearnrec.serve.audit import cmd_audit

        return cmd_audit(args)
    _need_extra()
    # --model/--encoder may be left out once the state holds a compacted base (Service.open says)
    if not args.state:
        raise ConfigError("'unlearnrec serve' needs --state")
    import torch
    import uvicorn

    from unlearnrec.serve.app import create_app
    from unlearnrec.serve.compaction import CompactionConfig
    from unlearnrec.serve.service import ServeConfig, Service

    config = ServeConfig(
        max_body_bytes=args.max_body_bytes,
        max_ids=args.max_ids,
        max_request_edges=args.max_request_edges,
        max_batch=args.max_batch,
        finetune_epochs=args.finetune_epochs,
        finetune_idle_s=args.finetune_idle,
        metrics_idle_s=args.metrics_idle,
        verify=not args.no_verify,
    )
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    compaction = CompactionConfig(
        every_requests=args.compact_every, interval_s=args.compact_interval, nice=args.compact_nice
    )
    service = Service.open(args.model, args.encoder, args.state, args.db, args.data_dir, config, compaction)
    app = create_app(service)
    print(
        f"unlearnrec serve: http://{args.host}:{args.port} (docs at /docs), state {args.state}, "
        f"database {service.store.engine.url.render_as_string(hide_password=True)}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info" if args.verbose else "warning",
        access_log=bool(args.verbose),
        h11_max_incomplete_event_size=64 * 1024,  # request line + headers
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_keys(args) -> int:
    _need_extra()
    if args.keys_command != "create":
        raise ConfigError("usage: unlearnrec serve keys create --state DIR --role ROLE")
    if not args.state and not args.db:
        raise ConfigError("'serve keys create' needs --state DIR (or --db URL)")
    from unlearnrec.serve.auth import check_role, create_key
    from unlearnrec.serve.store import Store

    check_role(args.role)
    if not args.db:
        Path(args.state).mkdir(parents=True, exist_ok=True)  # keys may be made before the first start
    store = Store.open(_db_url(args))
    try:
        key_id, key = create_key(store, args.role, args.label)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"key_id": key_id, "role": args.role, "key": key}))
    else:
        print(key)
        note = f"(key id {key_id}, role {args.role}: shown once, stored only as a salted hash)"
        print(note, file=sys.stderr)
    return 0


def register(sub, common) -> None:
    """Add ``serve`` (and ``serve keys create``) to the ``unlearnrec`` parser."""
    p = sub.add_parser("serve", help="run the forgetting service (HTTP API; needs the [serve] extra)")
    p.add_argument("--model", default=None, help="the base (original) trained model directory")
    p.add_argument("--encoder", default=None, help="its pre-trained Influence Encoder directory")
    p.add_argument("--state", default=None, help="state directory: versions and the SQLite database")
    p.add_argument("--db", default=None, help="database URL instead of SQLite (postgresql+psycopg://...)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default=None, help="dataset root (default: $UNLEARNREC_DATA)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (413 above)")
    p.add_argument("--max-ids", type=int, default=10_000, help="ids or edges one request may name")
    p.add_argument("--max-request-edges", type=int, default=100_000, help="edges one request may remove")
    p.add_argument("--max-batch", type=int, default=1000, help="requests merged into one version")
    p.add_argument("--finetune-epochs", type=int, default=0, help="k of Ours(k) when idle (0: off)")
    p.add_argument("--finetune-idle", type=float, default=5.0, help="idle seconds before fine-tuning")
    p.add_argument(
        "--metrics-idle",
        type=float,
        default=60.0,
        help="idle seconds before the served version's test metrics are computed (full ranking)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the per-request verification")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: many small requests on few cores)"
    )
    p.add_argument("--compact-every", type=int, default=0, help="compact after N applied requests (0: off)")
    p.add_argument("--compact-interval", type=float, default=0.0, help="compact every S seconds (0: off)")
    p.add_argument("--compact-nice", type=int, default=10, help="niceness of the compaction process")
    p.set_defaults(func=cmd_serve, serve_command=None)
    ks = p.add_subparsers(dest="serve_command")
    k = ks.add_parser("keys", help="API keys")
    kk = k.add_subparsers(dest="keys_command", required=True)
    c = kk.add_parser("create", help="create an API key and print it once")
    c.add_argument("--state", default=None, help="the service's state directory")
    c.add_argument("--db", default=None, help="database URL (if the service runs with --db)")
    c.add_argument("--role", required=True, help="reader, operator or admin")
    c.add_argument("--label", default=None, help="a note stored with the key")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_serve)
    a = ks.add_parser("audit", help="find forgotten data still stored in the state and database")
    a.add_argument("--state", default=None, help="the service's state directory")
    a.add_argument("--db", default=None, help="database URL (if the service runs with --db)")
    a.add_argument("--data-dir", default=None, help="dataset root, to read raw ids in text files")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=cmd_serve)
