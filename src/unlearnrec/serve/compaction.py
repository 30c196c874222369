# long file: the compaction state machine (snapshot, child process, install, recovery); issue 20
"""Compaction: retrain the base without the forgotten data, in a separate process, then swap.

Ours(0) versions are approximations that pile up on a base which still holds every forgotten
interaction. A compaction rebuilds the base as a real Retrain on the service's current training
store (the base's training set + the new interactions - everything forgotten), with the base's
own recipe (``Retrain.recipe``: its ``train_config``, early stopping on the validation split
when the dataset is known), then pre-trains a new Influence Encoder on it with the old encoder's
config. Compaction states (table ``compactions``)::

    requested -> running -> trained -> done -> purged
                    |          |
                    +-> failed / abandoned (tags cleared; nothing installed, nothing purged)

* **requested**: by ``POST /v1/admin/compactions``, by the schedule (``every_requests`` applied
  requests since the last one, or ``interval_s`` seconds) or after a crash (``restart``).
* **running**: the single writer (the worker thread) takes a snapshot in one transaction: every
  applied request not yet absorbed and every pending new interaction is tagged with the
  compaction's id. It writes the job's input (``STATE/compactions/cNNNNNN/``) and starts
  ``python -m unlearnrec.serve.compaction_job JOB_DIR`` as a child process (niced), so serving and
  new deletions go on. The child writes ``STATE/bases/cNNNNNN/{model,encoder}`` through a staging
  directory, fsync and one rename; it exits by itself when its parent dies.
* **trained**: the child finished and its output is complete.
* **done**: the worker *installs* it: loads the new base and encoder, re-applies (Ours(0) on the
  new base) the requests applied after the snapshot, writes that version, then in ONE database
  transaction records the new base's version, the re-applied version and the compaction's
  ``done``; then swaps the served model. Requests queued meanwhile are applied on the new base
  by the worker's next step. No ledger entry is added: each request keeps its one entry.
* **purged**: ``retention.purge`` deleted the superseded bases, encoders, versions, the job's
  input and temporary files, and reduced the absorbed requests to salted fingerprints.

A crash (SIGKILL) at any point: a ``running`` compaction whose output is complete becomes
``trained``; otherwise it is ``abandoned`` (its child is killed, its staging output removed, its
tags cleared) and a new one is ``requested`` (trigger ``restart``). The old base keeps serving
until a commit of ``done``; nothing is purged before that commit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import insert, select, update

from unlearnrec.errors import ConfigError
from unlearnrec.serve.compaction_job import COMPLETE, PARENT_ENV
from unlearnrec.serve.retention import BASES, JOBS, Fingerprints, forget_marks, readmit_marks, still_forgotten
from unlearnrec.serve.store import HONOURED, _write, compactions, deletions, new_interactions, versions

if TYPE_CHECKING:
    from unlearnrec.serve.service import Service

log = logging.getLogger(__name__)

ACTIVE = ("requested", "running", "trained")
INSTALLED = ("done", "purged")


@dataclass(frozen=True)
class CompactionConfig:
    """When to compact: ``every_requests`` applied requests since the last compaction (0: off),
    every ``interval_s`` seconds (0: off); ``nice``: niceness of the compaction process (it
    shares the CPUs with serving); ``seed``: of the retrain and the encoder pre-training;
    ``threads``: torch threads of the compaction process (0: torch's default)."""

    every_requests: int = 0
    interval_s: float = 0.0
    nice: int = 10
    seed: int = 0
    threads: int = 0

    def __post_init__(self):
        if self.every_requests < 0 or self.interval_s < 0 or self.threads < 0:
            raise ConfigError("compaction: every_requests, interval_s and threads must be >= 0")
        if not 0 <= self.nice <= 19:
            raise ConfigError(f"compaction: nice must be in 0..19, got {self.nice}")


def job_name(cid: int) -> str:
    return f"c{int(cid):06d}"


def current_base_dir(store, state_dir: Path) -> Path | None:
    """The directory of the latest installed compacted base (``model/`` and ``encoder/``)."""
    with store.engine.connect() as c:
        cid = c.execute(
            select(compactions.c.id)
            .where(compactions.c.status.in_(INSTALLED))
            .order_by(compactions.c.id.desc())
            .limit(1)
        ).scalar()
    return None if cid is None else Path(state_dir) / BASES / job_name(cid)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _is_our_child(pid: int, job_dir: Path) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(job_dir).encode() in cmd


class Compactor:
    """Runs the compactions of one service; every state change happens on the worker thread
    (``tick``), except ``request`` (any thread: one INSERT)."""

    def __init__(self, service: Service, config: CompactionConfig, fps: Fingerprints):
        self.service = service
        self.config = config
        self.fps = fps
        self.state = Path(service.versions.root).parent
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._last_finished = time.time()
        self._next_tick = 0.0
        self._purger: threading.Thread | None = None
        # a trained compaction's base, encoder and index, loaded off the writer thread
        self._prep: dict[int, Any] = {}
        self._loader: threading.Thread | None = None
        self.last_error: str | None = None

    # ------------------------------------------------------------------ queries
    @property
    def store(self):
        return self.service.store

    def rows(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.store.engine.connect() as c:
            q = select(compactions).order_by(compactions.c.id.desc()).limit(limit)
            return [dict(r._mapping) for r in c.execute(q)]

    def get(self, cid: int) -> dict[str, Any] | None:
        with self.store.engine.connect() as c:
            r = c.execute(select(compactions).where(compactions.c.id == cid)).first()
        return None if r is None else dict(r._mapping)

    def active(self) -> dict[str, Any] | None:
        with self.store.engine.connect() as c:
            r = c.execute(
                select(compactions)
                .where(compactions.c.status.in_(ACTIVE))
                .order_by(compactions.c.id)
                .limit(1)
            ).first()
        return None if r is None else dict(r._mapping)

    def _set(self, cid: int, old: str | tuple[str, ...], **values: Any) -> bool:
        olds = (old,) if isinstance(old, str) else old
        with _write(self.store.engine) as c:
            n = c.execute(
                update(compactions)
                .where(compactions.c.id == cid, compactions.c.status.in_(olds))
                .values(**values)
            ).rowcount
        return n == 1

    # ------------------------------------------------------------------ requests
    def request(self, trigger: str = "manual") -> tuple[dict[str, Any], bool]:
        """Request a compaction; ``(row, created)``: an active one is returned, not duplicated."""
        with self._lock:
            act = self.active()
            if act is not None:
                return act, False
            with _write(self.store.engine) as c:
                cid = c.execute(
                    insert(compactions).values(status="requested", trigger=trigger, requested_at=time.time())
                ).inserted_primary_key[0]
        self._next_tick = 0.0
        self.service.worker.notify()
        return self.get(int(cid)), True

    # ------------------------------------------------------------------ recovery
    def recover(self) -> None:
        """At start: finish or abandon what a crash interrupted (before the worker's recovery)."""
        for row in self.rows(limit=1000):
            cid, st = int(row["id"]), row["status"]
            job = self.state / JOBS / job_name(cid)
            if st == "running":
                pid = row["pid"]
                if _pid_alive(pid) and _is_our_child(pid, job):
                    log.warning("compaction %d: killing its orphaned process %d", cid, pid)
                    os.kill(pid, signal.SIGKILL)
                    for _ in range(100):
                        if not _pid_alive(pid):
                            break
                        time.sleep(0.05)
                if self._complete(cid):
                    self._set(cid, "running", status="trained", finished_at=time.time())
                    log.info("compaction %d: finished while the service was down; installing it", cid)
                else:
                    self._abandon(cid, "the service stopped while it ran", restart=True)

    def _complete(self, cid: int) -> bool:
        out = self.state / BASES / job_name(cid)
        return (out / COMPLETE).is_file()

    def _abandon(self, cid: int, why: str, restart: bool, status: str = "abandoned") -> None:
        """Clear the compaction's tags, remove its partial output; optionally request a new one.
        Only a compaction not yet installed can be abandoned (an installed one is left alone)."""
        with _write(self.store.engine) as c:
            n = c.execute(
                update(compactions)
                .where(compactions.c.id == cid, compactions.c.status.in_(ACTIVE))
                .values(status=status, error=why[:2000], finished_at=time.time())
            ).rowcount
            if n != 1:
                return
            c.execute(update(deletions).where(deletions.c.compaction == cid).values(compaction=None))
            c.execute(
                update(new_interactions).where(new_interactions.c.compaction == cid).values(compaction=None)
            )
        bases = self.state / BASES
        if bases.is_dir():
            for p in bases.iterdir():
                if p.name == job_name(cid) or p.name.startswith(f".staging-{job_name(cid)}"):
                    shutil.rmtree(p, ignore_errors=True)
        shutil.rmtree(self.state / JOBS / job_name(cid), ignore_errors=True)
        log.warning("compaction %d %s: %s", cid, status, why)
        if restart:
            self.request("restart")

    # ------------------------------------------------------------------ the worker's tick
    def tick(self) -> None:
        """Advance the compaction state machine by one step (worker thread only); at most every
        0.25 s, so that a busy queue pays for a few queries a second, not one per step."""
        now = time.monotonic()
        if now < self._next_tick:
            return
        self._next_tick = now + 0.25
        row = self.active()
        if row is None:
            self._finish_purges()
            self._schedule()
            return
        cid, st = int(row["id"]), row["status"]
        if st == "requested":
            self._start(cid)
        elif st == "running":
            self._poll(cid, row)
        elif st == "trained":
            if cid in self._prep:
                self._install_or_fail(cid)
            elif self._loader is None or not self._loader.is_alive():
                self._load_async(cid)

    def _load_async(self, cid: int) -> None:
        """Load the new base, its encoder and edge index on a thread of its own (seconds on a large
        dataset), so that the writer's install only re-applies, writes and swaps."""

        def run() -> None:
            try:
                self._prep[cid] = self._load_output(cid)
            except Exception as e:  # reported by the install, which gives the compaction up
                self._prep[cid] = e
            self._next_tick = 0.0
            self.service.worker.notify()

        self._loader = threading.Thread(target=run, name=f"unlearnrec-load-{cid}", daemon=True)
        self._loader.start()

    def _load_output(self, cid: int):
        from unlearnrec.model import TrainedModel
        from unlearnrec.serve.worker import BaseIndex
        from unlearnrec.unlearn.unlearnrec import UnlearnRec

        svc = self.service
        out = self.state / BASES / job_name(cid)
        new_base = TrainedModel.load(out / "model", device=svc.worker.base.graph.device)
        method = UnlearnRec.from_encoder(out / "encoder", new_base, finetune_epochs=0)
        ft = None
        if svc.config.finetune_epochs > 0:
            ft = UnlearnRec.from_encoder(
                out / "encoder", new_base, finetune_epochs=svc.config.finetune_epochs
            )
        if svc.data is not None and len(svc.data.val):
            for m in (method, ft):
                if m is not None:
                    m.set_validation(svc.data.val)
        return new_base, method, ft, BaseIndex(new_base.train)

    def _install_or_fail(self, cid: int) -> None:
        from sqlalchemy.exc import DBAPIError

        try:
            self.install(cid)
        except DBAPIError:
            raise  # the database is away: the worker retries, the compaction stays 'trained'
        except Exception as e:  # a broken output: give it up, the old base keeps serving
            log.exception("compaction %d could not be installed", cid)
            self._abandon(cid, f"install failed: {e.__class__.__name__}: {e}", restart=False, status="failed")

    def _finish_purges(self) -> None:
        with self.store.engine.connect() as c:
            ids = [
                int(i)
                for (i,) in c.execute(
                    select(compactions.c.id).where(compactions.c.status == "done").order_by(compactions.c.id)
                )
            ]
        if ids:
            self.purge_async(ids[0])

    def _schedule(self) -> None:
        cfg = self.config
        if cfg.every_requests > 0:
            with self.store.engine.connect() as c:
                from sqlalchemy import func

                n = c.execute(
                    select(func.count())
                    .select_from(deletions)
                    .where(deletions.c.status.in_(HONOURED), deletions.c.compaction.is_(None))
                ).scalar()
            if int(n) >= cfg.every_requests:
                self.request("schedule")
                return
        if cfg.interval_s > 0 and time.time() - self._last_finished >= cfg.interval_s:
            self._last_finished = time.time()
            self.request("interval")

    # ------------------------------------------------------------------ start: snapshot + spawn
    def _start(self, cid: int) -> None:
        svc = self.service
        worker = svc.worker
        served = worker.served
        with _write(self.store.engine) as c:
            c.execute(
                update(deletions)
                .where(deletions.c.status.in_(HONOURED), deletions.c.compaction.is_(None))
                .values(compaction=cid)
            )
            c.execute(
                update(new_interactions).where(new_interactions.c.compaction.is_(None)).values(compaction=cid)
            )
            n = c.execute(
                update(compactions)
                .where(compactions.c.id == cid, compactions.c.status == "requested")
                .values(status="running", started_at=time.time(), from_version=served.version)
            ).rowcount
        if n != 1:
            return
        try:
            job = self._write_input(cid)
            self._spawn(cid, job)
        except Exception as e:
            log.exception("compaction %d could not start", cid)
            self._abandon(
                cid, f"could not start: {e.__class__.__name__}: {e}", restart=False, status="failed"
            )

    def _snapshot(self, cid: int):
        """(residual training set, forgotten users, forgotten items, counts) of compaction ``cid``."""
        from unlearnrec.data.interactions import Interactions

        base = self.service.worker.base
        index = self.service.worker.index  # of base.train
        with self.store.engine.connect() as c:
            rows = [
                dict(r._mapping)
                for r in c.execute(
                    select(deletions).where(deletions.c.compaction == cid).order_by(deletions.c.id)
                )
            ]
            news = list(
                c.execute(
                    select(new_interactions.c.user, new_interactions.c.item).where(
                        new_interactions.c.compaction == cid
                    )
                )
            )
        nu, ni = base.train.num_users, base.train.num_items
        added = Interactions(
            np.asarray([r[0] for r in news], np.int64), np.asarray([r[1] for r in news], np.int64), nu, ni
        )
        train = base.train.union(added)
        forgets, readmits = forget_marks(self.store, self.fps), readmit_marks(self.store)
        fu = set(int(u) for u in base.forgotten_users)
        fi = set(int(i) for i in base.forgotten_items)
        drop = []
        for r in rows:
            q = index.request(r)
            fu.update(int(u) for u in q.users)
            fi.update(int(i) for i in q.items)
            if r["kind"] == "edges":
                drop.append(q.edges)
        # a user / item readmitted after the last request that forgot it is trained again
        fu = np.asarray(
            sorted(u for u in fu if still_forgotten("user", self.fps.user(u), forgets, readmits)), np.int64
        )
        fi = np.asarray(
            sorted(i for i in fi if still_forgotten("item", self.fps.item(i), forgets, readmits)), np.int64
        )
        keep = ~np.isin(train.users, fu) & ~np.isin(train.items, fi)
        if drop:
            keep &= ~np.isin(train.keys(), np.concatenate([e.keys() for e in drop]))
        residual = train.subset(keep)
        return residual, fu, fi, {"requests": len(rows), "interactions": len(news)}

    def _write_input(self, cid: int) -> Path:
        import torch
        from safetensors.torch import save_file

        from unlearnrec.io.checkpoint import atomic_write_bytes, atomic_write_text

        svc = self.service
        residual, fu, fi, counts = self._snapshot(cid)
        job = self.state / JOBS / job_name(cid)
        job.mkdir(parents=True, exist_ok=True)
        val_u = val_i = np.zeros(0, np.int64)
        if svc.data is not None and len(svc.data.val):
            v = svc.data.val
            ok = ~np.isin(v.users, fu) & ~np.isin(v.items, fi)
            val_u, val_i = v.users[ok], v.items[ok]
        tensors = {
            "train_users": torch.from_numpy(np.array(residual.users, dtype=np.int64)),
            "train_items": torch.from_numpy(np.array(residual.items, dtype=np.int64)),
            "val_users": torch.from_numpy(np.array(val_u, dtype=np.int64)),
            "val_items": torch.from_numpy(np.array(val_i, dtype=np.int64)),
            "forgotten_users": torch.from_numpy(fu),
            "forgotten_items": torch.from_numpy(fi),
        }
        tmp = job / "input.safetensors.tmp"
        save_file(tensors, str(tmp))
        atomic_write_bytes(job / "input.safetensors", tmp.read_bytes())
        tmp.unlink()
        spec = {
            "compaction": cid,
            "base": str(svc.base_dir),
            "encoder": str(svc.encoder_dir),
            "out": str(self.state / BASES / job_name(cid)),
            "num_users": residual.num_users,
            "num_items": residual.num_items,
            "seed": self.config.seed,
            "nice": self.config.nice,
            "threads": self.config.threads,
        }
        atomic_write_text(job / "job.json", json.dumps(spec, indent=1))
        with _write(self.store.engine) as c:
            c.execute(
                update(compactions)
                .where(compactions.c.id == cid)
                .values(
                    requests=counts["requests"],
                    interactions=counts["interactions"],
                    train_edges=len(residual),
                )
            )
        return job

    def _spawn(self, cid: int, job: Path) -> None:
        env = dict(os.environ)
        env[PARENT_ENV] = str(os.getpid())
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        logf = open(job / "log.txt", "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "unlearnrec.serve.compaction_job", str(job)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
            )
        finally:
            logf.close()
        self._set(cid, "running", pid=self.proc.pid)
        log.info("compaction %d started (process %d)", cid, self.proc.pid)

    def _poll(self, cid: int, row: dict[str, Any]) -> None:
        proc = self.proc
        if proc is None or proc.pid != row["pid"]:
            # not our child (a restart that recover() did not see): judge by its output
            if not _pid_alive(row["pid"]):
                if self._complete(cid):
                    self._set(cid, "running", status="trained", finished_at=time.time())
                else:
                    self._abandon(cid, "its process is gone", restart=True)
            return
        rc = proc.poll()
        if rc is None:
            return
        self.proc = None
        if rc == 0 and self._complete(cid):
            self._set(cid, "running", status="trained", finished_at=time.time())
            log.info("compaction %d trained", cid)
            self._load_async(cid)
            return
        tail = ""
        logp = self.state / JOBS / job_name(cid) / "log.txt"
        if logp.is_file():
            tail = logp.read_text(errors="replace")[-1500:]
        self.last_error = f"compaction {cid} exited with status {rc}"
        self._abandon(
            cid, f"the compaction process exited with status {rc}: {tail}", restart=False, status="failed"
        )

    # ------------------------------------------------------------------ install
    def install(self, cid: int) -> None:
        """Swap in the compacted base (worker thread; see the module docstring)."""
        from unlearnrec.serve.worker import METHOD, empty_request, merge_all, set_fingerprint

        svc = self.service
        worker = svc.worker
        out = self.state / BASES / job_name(cid)
        prep = self._prep.pop(cid, None)
        if prep is None:
            prep = self._load_output(cid)
        if isinstance(prep, Exception):
            raise prep
        new_base, method, ft, index = prep
        with self.store.engine.connect() as c:
            post = [
                dict(r._mapping)
                for r in c.execute(
                    select(deletions)
                    .where(deletions.c.status.in_(HONOURED), deletions.c.compaction.is_(None))
                    .order_by(deletions.c.id)
                )
            ]
        cum = merge_all(empty_request(new_base.train), [index.request(r) for r in post])
        latest = self.store.latest_version()
        vb = int(latest["version"]) + 1
        counts = self.store.counts()
        honoured = sum(counts[s] for s in HONOURED)
        now = time.time()
        salt = worker.salt
        base_row = {
            "version": vb,
            "parent": int(latest["version"]),
            "kind": "compacted",
            "method": "retrain",
            "set_fingerprint": set_fingerprint(empty_request(new_base.train), salt),
            "requests": honoured - len(post),
            "edges": 0,
            "users": 0,
            "items": 0,
            "train_fingerprint": new_base.train.fingerprint(),
            "path": str(out / "model"),
            "created_at": now,
            "seconds": None,
        }
        rows = [base_row]
        served_model, served_v, served_kind = new_base, vb, "compacted"
        if post:
            res = method.forget(new_base, new_base.train, cum)
            v2 = vb + 1
            fp = set_fingerprint(cum, salt)
            path = svc.versions.publish(v2, res.model, serve={"version": v2, "set_fingerprint": fp})
            rows.append(
                {
                    "version": v2,
                    "parent": vb,
                    "kind": "ours0",
                    "method": METHOD,
                    "set_fingerprint": fp,
                    "requests": honoured,
                    "edges": len(cum.edges),
                    "users": len(cum.users),
                    "items": len(cum.items),
                    "train_fingerprint": res.model.train.fingerprint(),
                    "path": str(path),
                    "created_at": time.time(),
                    "seconds": res.seconds,
                }
            )
            served_model, served_v, served_kind = res.model, v2, "ours0"
        report = {}
        rp = self.state / JOBS / job_name(cid) / "result.json"
        if rp.is_file():
            report = json.loads(rp.read_text())
        with _write(self.store.engine) as c:
            for r in rows:
                c.execute(insert(versions).values(**r))
            n = c.execute(
                update(compactions)
                .where(compactions.c.id == cid, compactions.c.status == "trained")
                .values(
                    status="done",
                    installed_at=time.time(),
                    base_version=vb,
                    served_version=served_v,
                    reapplied=len(post),
                    report=json.dumps({"compaction": report}),
                )
            ).rowcount
            if n != 1:
                raise RuntimeError(f"compaction {cid} is no longer 'trained'; not installed")
        svc.install_base(new_base, method, ft, cum, served_v, served_kind, served_model, out, index)
        self._last_finished = time.time()
        log.info(
            "compaction %d installed: base version %d, serving %d (%d requests re-applied)",
            cid,
            vb,
            served_v,
            len(post),
        )
        self.purge_async(cid)

    # ------------------------------------------------------------------ purge
    def purge_async(self, cid: int) -> None:
        """Purge on a thread of its own: deleting gigabytes of superseded versions and rewriting
        the database must not hold up the writer (the purge touches nothing the writer reads)."""
        if self._purger is not None and self._purger.is_alive():
            return

        def run() -> None:
            try:
                self.purge(cid)
            except Exception:
                log.exception("purge after compaction %d failed; retried at the next tick", cid)

        self._purger = threading.Thread(target=run, name=f"unlearnrec-purge-{cid}", daemon=True)
        self._purger.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        """On a graceful stop: end a compaction's process (the restart abandons and restarts it)
        and let a purge under way finish."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self.wait_purged(timeout)

    def wait_purged(self, timeout: float | None = None) -> None:
        """Wait for a purge under way (tests, shutdown)."""
        if self._purger is not None:
            self._purger.join(timeout)

    def purge(self, cid: int) -> dict[str, Any]:
        from unlearnrec.serve.retention import purge

        row = self.get(cid)
        if row is None or row["status"] != "done":
            return {}
        # never purge what is not superseded: only once the newest installed base is this one
        base_dir = self.state / BASES / job_name(cid)
        if Path(self.service.base_dir).resolve() != (base_dir / "model").resolve():
            log.warning("compaction %d is not the base being served; not purging", cid)
            return {}
        keep = {
            int(v["version"]) for v in self.store.versions() if int(v["version"]) >= int(row["base_version"])
        }
        rep = purge(self.store, self.state, cid, self.fps, base_dir, keep)
        self.service._unblock_failed()  # the absorbed requests now live only in the new base
        old = json.loads(row["report"] or "{}")
        with _write(self.store.engine) as c:
            c.execute(
                update(compactions)
                .where(compactions.c.id == cid, compactions.c.status == "done")
                .values(status="purged", purged_at=time.time(), report=json.dumps({**old, "purge": rep}))
            )
        return rep
