"""The forgetting service end to end (issue 19): deletion-to-effect and recommendation latency.

A LightGCN is trained on the dataset for ``--epochs`` epochs (few: timing does not depend on
accuracy; the training time is measured and is this recipe's Retrain), its Influence Encoder is
pre-trained briefly, and the real service (``unlearnrec serve``, uvicorn, embedded SQLite in a
temporary state directory unless ``--db``) is started as a subprocess. Then, over HTTP on 127.0.0.1:

1. **recommendations, no deletions**: ``--rec-clients`` closed-loop clients ask for top-20 of
   random users for ``--rec-seconds``: latency p50 / p99 and throughput;
2. **deletion-to-effect** at each rate of ``--rates`` (requests a second, open loop, for
   ``--seconds`` each): half the requests forget one user, half forget 1-3 interactions of other
   users (load). For every user request, the time from its ``202 Accepted`` to the first
   recommendations response for that user that reflects it (``410 Gone``) is measured by a
   watcher polling every ``--poll-ms`` (so figures carry up to that much extra); p50 / p99.
   While the 10/s rate runs, the recommendation clients run again: latency and throughput *with
   deletions arriving*;
3. **the same service answering by Retrain**, beside it: a request can only take effect after a
   retrain that started after it arrived, so with a retrain of T seconds its deletion-to-effect
   lies between T and 2T (p50 ~1.5 T, p99 ~1.99 T for arrivals spread over a retrain), at every
   rate of at least one request per T. T is this command's own measured training time (the
   few-epoch recipe), and, labelled as such, the measured ML-1M Retrain of docs/RESULTS.md.

    flock /tmp/unlearnrec-heavy.lock timeout 900 .venv/bin/python benchmarks/bench_service.py --dataset ml-1m
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# measured full Retrain figures (docs/RESULTS.md, LightGCN Table 2 on ML-1M, one CPU thread)
RESULTS_RETRAIN = {
    "ml-1m": (505.0, "LightGCN paper-level recipe (dim 128, 36 epochs), docs/RESULTS.md Table 2"),
    "yelp2018": (3790.0, "LightGCN, 40 epochs on the full split, docs/RESULTS.md"),
}


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(
    dataset: str, data_dir, epochs: int, dim: int, enc_epochs: int, enc_steps: int, threads: int, out: Path
):
    """Train the model and its encoder; returns (model dir, encoder dir, train seconds, data)."""
    from unlearnrec.backbones import build_backbone
    from unlearnrec.config import to_dict
    from unlearnrec.data.datasets import load_dataset
    from unlearnrec.data.graph import Graph
    from unlearnrec.model import TrainedModel
    from unlearnrec.train.loop import TrainConfig, fit
    from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig

    data = load_dataset(dataset, data_dir, val_ratio=0.1, seed=0)
    graph = Graph.from_interactions(data.train)
    bb = build_backbone(
        "lightgcn", data.num_users, data.num_items, {"dim": dim}, generator=torch.Generator().manual_seed(0)
    )
    cfg = TrainConfig(
        epochs=epochs, batch_size=8192, lr=1e-2, eval_every=epochs, patience=0, seed=0, threads=threads
    )
    t = time.perf_counter()
    fit(bb, graph, cfg)
    train_s = time.perf_counter() - t
    model = TrainedModel(
        bb,
        graph,
        "lightgcn",
        dataset,
        {"seed": 0, "val_ratio": 0.1},
        # the recipe is recorded: a compaction (issue #20) retrains with it
        meta={"original_train_fingerprint": data.train.fingerprint(), "train_config": to_dict(cfg)},
    )
    model.save(out / "model")
    t = time.perf_counter()
    method = UnlearnRec(
        UnlearnRecConfig(epochs=enc_epochs, batch_size=8192, steps_per_epoch=enc_steps, lr=5e-3), seed=0
    )
    method.prepare(model, model.train)
    enc_s = time.perf_counter() - t
    method.save_prepared(out / "encoder")
    return out / "model", out / "encoder", train_s, enc_s, data


class Server:
    def __init__(self, model, encoder, state, db, data_dir, log: Path, threads: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-c",
            "import sys; from unlearnrec.cli import main; sys.exit(main())",
            "serve",
        ]
        args += [
            "--model",
            str(model),
            "--encoder",
            str(encoder),
            "--state",
            str(state),
            "--port",
            str(self.port),
        ]
        if db:
            args += ["--db", db]
        if data_dir:
            args += ["--data-dir", str(data_dir)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        }
        env["OMP_NUM_THREADS"] = str(threads)
        self.log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, httpx, timeout: float = 300.0) -> float:
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return time.monotonic() - t
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def rec_load(httpx, url: str, key: str, users, seconds: float, clients: int) -> dict:
    """Closed-loop recommendation clients: latency p50/p99 (ms) and requests a second."""
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10.0) as c:
            while time.monotonic() < stop:
                u = users[rng.randrange(len(users))]
                t = time.perf_counter()
                r = c.get(f"/v1/users/{u}/recommendations", params={"k": 20})
                if r.status_code in (200, 410):
                    mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    t0 = time.monotonic()
    ts = [threading.Thread(target=run, args=(s,)) for s in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.monotonic() - t0
    return {
        "requests": len(lat),
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "throughput_rps": len(lat) / wall,
    }


def deletion_load(httpx, url: str, keys: dict, plan, rate: float, seconds: float, poll_ms: float) -> dict:
    """Open-loop deletion requests at ``rate``; deletion-to-effect of the user requests."""
    n = int(rate * seconds)
    items = [plan.pop() for _ in range(n)]
    sched = [i / rate for i in range(n)]
    pending: dict[int, tuple[str, float]] = {}  # request id -> (raw user, accepted time)
    effect: list[float] = []
    accept_ms: list[float] = []
    lock = threading.Lock()
    sent_done = threading.Event()
    failures: list[str] = []
    op = {"Authorization": f"Bearer {keys['operator']}"}
    rd = {"Authorization": f"Bearer {keys['reader']}"}
    t0 = time.monotonic()
    cursor = [0]

    def sender() -> None:
        with httpx.Client(base_url=url, headers=op, timeout=30.0) as c:
            while True:
                with lock:
                    k = cursor[0]
                    cursor[0] += 1
                if k >= n:
                    return
                delay = t0 + sched[k] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                body, watched = items[k]
                t = time.perf_counter()
                r = c.post("/v1/deletions", json=body)
                done = time.perf_counter()
                if r.status_code != 202:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                    continue
                with lock:
                    accept_ms.append((done - t) * 1e3)
                    if watched is not None:
                        pending[r.json()["id"]] = (watched, done)

    def watcher() -> None:
        # the worker applies requests in acceptance order, so only the oldest pending user needs
        # polling; once it answers 410 the next ones are checked at once (few requests of load)
        with httpx.Client(base_url=url, headers=rd, timeout=30.0) as c:
            while not (sent_done.is_set() and not pending):
                while True:
                    with lock:
                        oldest = min(pending) if pending else None
                    if oldest is None:
                        break
                    u, t = pending[oldest]
                    r = c.get(f"/v1/users/{u}/recommendations", params={"k": 20})
                    if r.status_code != 410:
                        break
                    now = time.perf_counter()
                    with lock:
                        pending.pop(oldest, None)
                        effect.append(now - t)
                time.sleep(poll_ms / 1e3)

    senders = [threading.Thread(target=sender) for _ in range(max(2, min(16, int(rate * 0.1))))]
    w = threading.Thread(target=watcher)
    w.start()
    for s in senders:
        s.start()
    for s in senders:
        s.join()
    sent_wall = time.monotonic() - t0
    sent_done.set()
    w.join(timeout=300)
    return {
        "rate": rate,
        "sent": n,
        "achieved_rate": n / sent_wall,
        "accepted": len(accept_ms),
        "failures": failures[:3],
        "post_p50_ms": pct(accept_ms, 50),
        "post_p99_ms": pct(accept_ms, 99),
        "measured": len(effect),
        "effect_p50_s": pct(effect, 50),
        "effect_p99_s": pct(effect, 99),
        "effect_max_s": max(effect) if effect else float("nan"),
        "effect_s": effect,
    }


def _raw(x):
    """A dataset's raw id as the API takes it: an int where the dataset's ids are numbers (ML-1M,
    Gowalla), else the string (Yelp2018's user and business ids)."""
    return int(x) if isinstance(x, (int, np.integer)) or str(x).isdigit() else str(x)


def make_plan(data, seed: int = 0):
    """Disjoint requests, popped from the end: (body, watched raw user or None), half users, half edges."""
    rng = np.random.default_rng(seed)
    tr = data.train
    raw_u = data.meta.get("user_ids")
    raw_i = data.meta.get("item_ids")
    ru = (lambda u: _raw(raw_u[u])) if raw_u is not None and len(raw_u) == tr.num_users else int
    ri = (lambda i: _raw(raw_i[i])) if raw_i is not None and len(raw_i) == tr.num_items else int
    users = rng.permutation(tr.num_users)
    half = len(users) // 2
    forget_users, edge_users = users[:half], users[half:]
    out = []
    csr = tr.to_csr()
    for k, u in enumerate(forget_users):
        out.append(({"users": [ru(u)]}, str(ru(u))))
        v = int(edge_users[k % len(edge_users)])
        row = csr.indices[csr.indptr[v] : csr.indptr[v + 1]]
        if len(row) > 3 * (k // len(edge_users) + 1):
            start = 3 * (k // len(edge_users))
            pairs = [[ru(v), ri(int(i))] for i in row[start : start + int(rng.integers(1, 4))]]
            out.append(({"edges": pairs}, None))
    out.reverse()
    return out


def compaction_phase(httpx, url: str, keys: dict, plan, window: float, poll_ms: float) -> dict:
    """Issue #20: deletions at 10/s for ``window`` seconds without a compaction, then the same
    while a compaction (retrain + encoder pre-training in a separate process, install, purge)
    runs; the compaction's wall time (POST -> purged) and its own timings."""
    base = deletion_load(httpx, url, keys, plan, 10, window, poll_ms)
    adm = {"Authorization": f"Bearer {keys['admin']}"}
    with httpx.Client(base_url=url, headers=adm, timeout=30.0) as c:
        t0 = time.monotonic()
        r = c.post("/v1/admin/compactions")
        if r.status_code != 202:
            raise RuntimeError(f"compaction not started: {r.status_code} {r.text[:200]}")
        cid = r.json()["id"]
        done: dict = {}

        def wait() -> None:
            with httpx.Client(base_url=url, headers=adm, timeout=30.0) as w:
                while True:
                    v = w.get(f"/v1/admin/compactions/{cid}").json()
                    if v["status"] in ("purged", "failed", "abandoned"):
                        done.update(v, wall_s=time.monotonic() - t0)
                        return
                    time.sleep(0.2)

        th = threading.Thread(target=wait)
        th.start()
        # deletions at 10/s from the request until 10 s after the purge, in chunks of 15 s
        chunks = []
        while True:
            chunks.append(deletion_load(httpx, url, keys, plan, 10, 15.0, poll_ms))
            if "wall_s" in done and time.monotonic() - t0 >= done["wall_s"] + 10.0:
                break
        th.join()
        effect = [x for ch in chunks for x in ch["effect_s"]]
        during = {
            "rate": 10,
            "seconds": 15.0 * len(chunks),
            "sent": sum(ch["sent"] for ch in chunks),
            "accepted": sum(ch["accepted"] for ch in chunks),
            "failures": [f for ch in chunks for f in ch["failures"]][:3],
            "measured": len(effect),
            "effect_p50_s": pct(effect, 50),
            "effect_p99_s": pct(effect, 99),
            "effect_max_s": max(effect) if effect else float("nan"),
        }
    rep = (done.get("report") or {}).get("compaction", {})
    return {
        "window_s": window,
        "without_compaction": base,
        "during_compaction": during,
        "compaction": {
            "status": done.get("status"),
            "wall_s": done.get("wall_s"),
            "started_to_installed_s": done.get("seconds"),
            "retrain_s": rep.get("train_seconds"),
            "encoder_s": rep.get("encoder_seconds"),
            "epochs_run": rep.get("epochs_run"),
            "train_edges": done.get("train_edges"),
            "requests_absorbed": done.get("requests"),
            "reapplied": done.get("reapplied"),
            "purge_s": ((done.get("report") or {}).get("purge") or {}).get("seconds"),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the served model (few)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--encoder-epochs", type=int, default=1)
    p.add_argument("--encoder-steps", type=int, default=20, help="steps a pre-training epoch (0: all)")
    p.add_argument("--rates", type=float, nargs="+", default=[1, 10, 100])
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of each deletion rate")
    p.add_argument("--rec-seconds", type=float, default=10.0)
    p.add_argument("--rec-clients", type=int, default=2)
    p.add_argument("--poll-ms", type=float, default=20.0)
    p.add_argument("--db", default=None, help="database URL (default: SQLite in a temporary state dir)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument(
        "--work", default=None, help="keep the trained model here and reuse it on the next run (same options)"
    )
    p.add_argument(
        "--compaction",
        action="store_true",
        help="also measure a compaction (issue #20): its wall time and deletions at 10/s beside it",
    )
    p.add_argument(
        "--compaction-only", action="store_true", help="measure only the compaction phase (skip the others)"
    )
    p.add_argument(
        "--compaction-window",
        type=float,
        default=0.0,
        help="seconds of deletions at 10/s with and without a compaction (0: ~the retrain time + 15)",
    )
    args = p.parse_args()
    import httpx

    from unlearnrec.serve.auth import create_key
    from unlearnrec.serve.store import Store

    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-service-"))
    work.mkdir(parents=True, exist_ok=True)
    built = work / "build.json"
    recipe = {k: getattr(args, k) for k in ("dataset", "epochs", "dim", "encoder_epochs", "encoder_steps")}
    recipe["recorded_train_config"] = True  # models built before this flag lack the recipe a compaction needs
    if built.is_file() and json.loads(built.read_text())["recipe"] == recipe:
        from unlearnrec.data.datasets import load_dataset

        b = json.loads(built.read_text())
        model, encoder, train_s, enc_s = work / "model", work / "encoder", b["train_s"], b["enc_s"]
        data = load_dataset(args.dataset, args.data_dir, val_ratio=0.1, seed=0)
        print(f"[{args.dataset}] reusing {work} (trained in {train_s:.1f}s when built)", flush=True)
    else:
        print(f"[{args.dataset}] training LightGCN dim {args.dim} for {args.epochs} epochs ...", flush=True)
        model, encoder, train_s, enc_s, data = build(
            args.dataset,
            args.data_dir,
            args.epochs,
            args.dim,
            args.encoder_epochs,
            args.encoder_steps,
            args.threads,
            work,
        )
        built.write_text(json.dumps({"recipe": recipe, "train_s": train_s, "enc_s": enc_s}))
    print(
        f"  trained in {train_s:.1f}s ({train_s / args.epochs:.1f}s an epoch); encoder {enc_s:.1f}s",
        flush=True,
    )
    import shutil

    shutil.rmtree(work / "state", ignore_errors=True)
    state = work / "state"
    state.mkdir()
    db = args.db or f"sqlite:///{state / 'service.sqlite'}"
    store = Store.open(db)
    keys = {r: create_key(store, r)[1] for r in ("reader", "operator", "admin")}
    store.close()
    server = Server(model, encoder, state, db, args.data_dir, work / "server.log", args.threads)
    try:
        ready_s = server.wait_ready(httpx)
        print(f"  service ready in {ready_s:.1f}s", flush=True)
        raw_u = data.meta.get("user_ids")
        all_users = [str(_raw(raw_u[u])) if raw_u is not None else str(u) for u in range(data.num_users)]
        plan = make_plan(data)
        out = {
            "dataset": args.dataset,
            "model": {
                "dim": args.dim,
                "epochs": args.epochs,
                "train_seconds": train_s,
                "encoder_seconds": enc_s,
            },
            "machine": {"cpus": os.cpu_count(), "load_1min_at_start": os.getloadavg()[0]},
        }
        rec_users = all_users
        out["rec_no_deletions"] = rec_load(
            httpx, server.url, keys["reader"], rec_users, args.rec_seconds, args.rec_clients
        )
        r = out["rec_no_deletions"]
        print(
            f"  recommendations, no deletions: p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
            f"{r['throughput_rps']:.0f}/s ({args.rec_clients} clients)",
            flush=True,
        )
        out["deletions"] = []

        def report(d: dict, label: str) -> None:
            print(
                f"  {label}: {d['rate']:g}/s (achieved {d['achieved_rate']:.1f}/s, {d['accepted']} accepted, "
                f"POST p50 {d['post_p50_ms']:.1f} ms): deletion-to-effect "
                f"p50 {d['effect_p50_s'] * 1e3:.0f} ms  "
                f"p99 {d['effect_p99_s'] * 1e3:.0f} ms  max {d['effect_max_s'] * 1e3:.0f} ms "
                f"over {d['measured']} user deletions",
                flush=True,
            )

        def with_recs() -> None:
            # recommendations with deletions arriving at 10/s, both measured in their own phase
            rec_during: dict = {}
            t = threading.Thread(
                target=lambda: rec_during.update(
                    rec_load(httpx, server.url, keys["reader"], rec_users, args.seconds, args.rec_clients)
                )
            )
            t.start()
            d = deletion_load(httpx, server.url, keys, plan, 10, args.seconds, args.poll_ms)
            t.join()
            out["rec_with_deletions_10_per_s"] = rec_during
            out["deletions_under_rec_load"] = d
            print(
                f"  recommendations while 10 deletions/s arrive: p50 {rec_during['p50_ms']:.1f} ms  "
                f"p99 {rec_during['p99_ms']:.1f} ms  {rec_during['throughput_rps']:.0f}/s",
                flush=True,
            )
            report(d, "deletions beside the recommendation load")

        # the forgotten set only grows: the highest rate (most requests) goes last
        done_recs = args.compaction_only
        for rate in [] if args.compaction_only else sorted(args.rates):
            if rate > 10 and not done_recs:
                with_recs()
                done_recs = True
            d = deletion_load(httpx, server.url, keys, plan, rate, args.seconds, args.poll_ms)
            out["deletions"].append(d)
            report(d, "deletions alone")
        if not done_recs:
            with_recs()
        if args.compaction or args.compaction_only:
            window = args.compaction_window or round(train_s + enc_s + 15.0)
            print(
                f"  compaction: deletions at 10/s for {window:.0f}s without, then from a compaction's "
                "request until 10 s after its purge ...",
                flush=True,
            )
            cp = compaction_phase(httpx, server.url, keys, plan, window, args.poll_ms)
            out["compaction"] = cp
            c0, w0, w1 = cp["compaction"], cp["without_compaction"], cp["during_compaction"]
            print(
                f"  compaction {c0['status']}: wall {c0['wall_s']:.1f}s (retrain {c0['retrain_s']}s, "
                f"encoder {c0['encoder_s']}s, {c0['train_edges']} edges, {c0['requests_absorbed']} requests "
                f"absorbed, {c0['reapplied']} re-applied, purge {c0['purge_s']}s)",
                flush=True,
            )
            for label, d in (("without compaction", w0), ("during compaction", w1)):
                print(
                    f"  deletions at 10/s {label}: deletion-to-effect p50 {d['effect_p50_s'] * 1e3:.0f} ms  "
                    f"p99 {d['effect_p99_s'] * 1e3:.0f} ms  max {d['effect_max_s'] * 1e3:.0f} ms "
                    f"over {d['measured']} user deletions",
                    flush=True,
                )
            if w0["effect_p99_s"] == w0["effect_p99_s"] and w0["effect_p99_s"] > 0:
                print(f"  p99 during / without compaction = {w1['effect_p99_s'] / w0['effect_p99_s']:.2f}x")
        with httpx.Client(base_url=server.url, timeout=10.0) as c:
            metrics = c.get("/metrics").text
        values = {
            ln.split()[0]: float(ln.split()[1])
            for ln in metrics.splitlines()
            if ln and not ln.startswith("#")
        }
        n = values.get("unlearnrec_version_seconds_count", 0.0)
        out["final_version"] = values.get("unlearnrec_model_version")
        out["versions"] = n
        if n:
            out["mean_version_step_s"] = values["unlearnrec_version_seconds_sum"] / n
            out["mean_forget_s"] = values["unlearnrec_forget_seconds_sum"] / n
            print(
                f"  {n:.0f} versions: a step (batch -> served) {out['mean_version_step_s'] * 1e3:.0f} ms "
                "on average, "
                f"of which Ours(0) {out['mean_forget_s'] * 1e3:.0f} ms",
                flush=True,
            )
    finally:
        server.stop()
        shutil.rmtree(work / "state", ignore_errors=True)  # ~13 MB a version on ML-1M
    retrain = [("this command's recipe (measured above)", train_s)]
    if args.dataset in RESULTS_RETRAIN:
        s, what = RESULTS_RETRAIN[args.dataset]
        retrain.append((f"measured full Retrain: {what}", s))
    out["retrain_service"] = []
    for what, t in retrain:
        row = {"retrain": what, "T_s": t, "effect_p50_s": 1.5 * t, "effect_p99_s": 1.99 * t}
        out["retrain_service"].append(row)
        print(
            f"  answered by Retrain, T = {t:.0f}s ({what}): deletion-to-effect p50 ~{1.5 * t:.0f}s  "
            f"p99 ~{1.99 * t:.0f}s at any rate >= 1/T (extrapolated from T)",
            flush=True,
        )
    ours = next((d for d in out["deletions"] if d["rate"] == 10), None)
    if ours and ours["effect_p50_s"] == ours["effect_p50_s"]:
        ratio = 1.5 * train_s / ours["effect_p50_s"]
        print(f"  ratio at 10/s, p50: Retrain (this recipe) / UnlearnRec service = {ratio:.0f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
