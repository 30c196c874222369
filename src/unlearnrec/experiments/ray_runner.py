"""Run a grid on a Ray cluster: its dependency graph as Ray tasks over the shared cache (issue 24).

``run_experiment_ray`` runs the same cells as :func:`~unlearnrec.experiments.runner.run_experiment`,
but as tasks that follow the grid's dependencies, so independent work runs side by side::

    clean LightGCN (dataset, seed) -> adversarial edges (clean model, ratio) -> model to unlearn
    (the group) -> prepared state (a persisted ``prepare``, e.g. UnlearnRec's encoder) -> cells
    drawn request (random / users / items) ------------------------------------------> cells
    the group's Retrain cell (its model: the reference of the other methods) ---------> cells

Every task builds its own :class:`~unlearnrec.experiments.store.Store` over the same cache root
(``cache_dir``: a path every node sees, e.g. an NFS mount), so what a task writes is found by the
tasks after it; each entry is written aside and renamed into place, as in the serial runner. The
driver submits only what is missing: a model, request or prepared state already in the cache is
not submitted (resume), a cell with an ``ok`` line in ``OUT/results.jsonl`` neither. The driver alone
appends to ``results.jsonl``, one line per cell as its task returns (keyed by the cell hash: a task
that Ray retries after its worker died still returns once, and a cell is never written twice in a
run). A task whose worker dies is retried (``max_retries``); a retried task finds the entries its
first attempt finished in the cache and reuses them.

The records are those of the serial runner (same hashes, seeds and metrics; the prepare time of a
shared prepared state is reported on the first cell that uses it, as serially), provided the tasks
use as many intra-op threads as the serial run did: each task asks Ray for ``cpus_per_task`` CPUs
(default 1) and sets torch's thread count to it, and float sums over a different number of threads
differ in the last digits. The graph itself is built by :mod:`~unlearnrec.experiments.ray_graph`.
``ray`` is imported here only, when a grid is run.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearnrec.errors import UnlearnRecError
from unlearnrec.experiments.cell import Builder, error_record, run_cell, stamp
from unlearnrec.experiments.grid import (
    ExperimentConfig,
    Group,
    MethodSpec,
    cell_hash,
    check_methods,
    load_config,
)
from unlearnrec.experiments.ray_graph import Node, build_graph
from unlearnrec.experiments.results import ResultsLog
from unlearnrec.experiments.store import Store
from unlearnrec.train import resume

log = logging.getLogger(__name__)

RAY_MISSING = "--ray needs the cluster extra: pip install 'unlearnrec[cluster]'"
#: how long the driver waits for a TCP answer from a cluster address before calling it unreachable
CONNECT_TIMEOUT_S = 5.0


def import_ray():
    """The ``ray`` module, or one clear :class:`UnlearnRecError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise UnlearnRecError(RAY_MISSING) from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (optionally ``ray://HOST:PORT``) -> (host, port); anything else is an error."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UnlearnRecError(f"--ray {address}: expected 'auto' or a cluster address HOST:PORT")
    return host.strip("[]"), int(port)


def connect(address: str, ray=None) -> bool:
    """Join the Ray cluster at ``address``; returns whether this call started the connection.

    ``auto``: the cluster ``RAY_ADDRESS`` names, else the one ``ray start`` started on this machine,
    else a new local one with this machine's CPUs. ``HOST:PORT`` (the head's GCS port, 6379 by
    default) or ``ray://HOST:PORT`` (Ray Client): that cluster; an address where nothing answers
    within :data:`CONNECT_TIMEOUT_S` is an error (Ray itself would retry for minutes). A process that
    has already called ``ray.init`` keeps its connection.
    """
    ray = ray or import_ray()
    target = None if address == "auto" else address
    if target is not None:
        host, port = _host_port(target)
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise UnlearnRecError(f"--ray {address}: no Ray cluster answers there ({reason})") from None
    if ray.is_initialized():
        return False
    try:
        ray.init(address=target, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        why = " ".join(str(e).split())
        if target is not None and not os.environ.get("RAY_AUTH_MODE"):
            # Ray >= 2.5x starts clusters with token authentication; a driver given an address sends
            # its token (~/.ray/auth_token or RAY_AUTH_TOKEN) only when told to
            why += "; if the cluster uses token authentication, set RAY_AUTH_MODE=token"
        raise UnlearnRecError(f"--ray {address}: cannot join the Ray cluster ({why})") from None
    return True


# ------------------------------------------------------------------------------------ the tasks
@dataclass(frozen=True)
class Context:
    """What every task needs to rebuild the grid's store on its node (pickled with each task)."""

    config: ExperimentConfig
    root: str
    fallbacks: tuple[str, ...]
    data_dir: str | None
    device: str | None
    build: Builder | None
    threads: int


_DATASETS: dict[tuple, Any] = {}  # per worker process: datasets already loaded, by name and split


def _store(ctx: Context) -> Store:
    """A store over the shared cache, with the datasets this worker has loaded before."""
    torch.set_num_threads(ctx.threads)
    store = Store(ctx.config, ctx.root, data_dir=ctx.data_dir, device=ctx.device, fallbacks=ctx.fallbacks)
    split = (str(store.data_dir), ctx.config.val_ratio, ctx.config.split_seed)
    for (name, *rest), data in _DATASETS.items():
        if tuple(rest) == split:
            store.use_dataset(name, data)
    return store


def _keep_datasets(ctx: Context, store: Store) -> None:
    split = (str(store.data_dir), ctx.config.val_ratio, ctx.config.split_seed)
    for name, data in store._data.items():
        _DATASETS[(name, *split)] = data


def _builder(ctx: Context) -> Builder:
    if ctx.build is not None:
        return ctx.build
    from unlearnrec.unlearn.registry import build_method

    return build_method


def setup_task(ctx: Context, kind: str, group: Group) -> str:
    """Build (or find in the cache) one entry a group's cells need: ``clean`` (the attack's clean
    LightGCN), ``attack`` (the adversarial edges), ``model`` (the model to unlearn) or ``request``
    (a drawn request)."""
    store = _store(ctx)
    if kind == "clean":
        store.clean_model(group)
    elif kind == "attack":
        store.attack(group)
    elif kind == "model":
        store.model(group)
    elif kind == "request":
        store.forget_set(group)
    else:
        raise ValueError(f"unknown setup task '{kind}'")
    _keep_datasets(ctx, store)
    return kind


def prepare_task(ctx: Context, group: Group, spec: MethodSpec) -> tuple[float, float, bool]:
    """``prepare`` of ``spec`` on the group's model, into the cache; returns (seconds, peak MiB, cached)."""
    store = _store(ctx)
    data = store.dataset(group.dataset)
    model = store.model(group)
    train = store.forget_set(group).train
    method = _builder(ctx)(spec.name, dict(spec.config), group.seed)
    method.set_validation(data.val)
    method.set_scratch(store.scratch_dir(group, spec), store.checkpoint_every)
    out = store.prepare(method, group, spec, model, train)
    _keep_datasets(ctx, store)
    return out


def cell_task(ctx: Context, group: Group, spec: MethodSpec, retrain: MethodSpec | None) -> tuple[dict, bool]:
    """One cell, as :class:`~unlearnrec.experiments.runner.Runner` runs it; returns (record, whether
    the Retrain reference was used). A failing cell returns its error record."""
    store = _store(ctx)
    is_retrain = spec.name == "retrain"
    try:
        reference = store.retrained(group, retrain) if retrain is not None and not is_retrain else None
        rec, result = run_cell(store, group, spec, _builder(ctx), reference)
        if is_retrain:
            store.save_retrained(group, spec, result.model)
    except Exception as e:  # a broken method fails its cell, never the grid
        return error_record(ctx.config, group, spec, store.device, e), False
    finally:
        _keep_datasets(ctx, store)
    return rec, reference is not None


# ------------------------------------------------------------------------------------ the driver
def run_experiment_ray(
    config: str | os.PathLike | dict[str, Any] | ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    address: str = "auto",
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    build: Builder | None = None,
    on_cell: Callable[[dict], None] | None = None,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    cpus_per_task: int = 1,
    max_retries: int = 3,
) -> list[dict]:
    """Run (or resume) the grid of ``config`` into ``out_dir`` as Ray tasks; returns this run's records.

    ``address``: see :func:`connect` (a process that called ``ray.init`` itself keeps its cluster);
    ``cache_dir``: the cache root, which every node must see at the same path (default:
    :func:`~unlearnrec.experiments.runner.default_cache`); ``on_cell(record)`` after each cell;
    ``on_progress({"done", "running", "pending"})`` (counts of this run's cells) whenever a task
    ends; ``max_retries``: attempts after a worker dies. The other arguments are those of
    :func:`~unlearnrec.experiments.runner.run_experiment`; a ``build`` function is sent to the workers.
    """
    from unlearnrec.data.datasets import data_dir as data_root
    from unlearnrec.experiments.runner import default_cache

    cfg = load_config(config)
    if build is None:
        check_methods(cfg)
    if cpus_per_task < 1:
        raise UnlearnRecError(f"cpus_per_task must be >= 1, got {cpus_per_task}")
    ray = import_ray()
    out = Path(out_dir)
    root = Path(default_cache() if cache_dir is None else cache_dir).expanduser().resolve()
    probe = Store(cfg, root, data_dir=data_dir, device="cpu", fallbacks=(out,))
    dev = device or cfg.device
    ctx = Context(
        cfg,
        str(root),
        tuple(str(f.resolve()) for f in probe.fallbacks),
        # the driver's data root (--data-dir, the grid's, else $UNLEARNREC_DATA), for every node
        str(data_root(data_dir if data_dir is not None else cfg.data_dir).resolve()),
        # Ray hands a task its GPU as the only visible one
        "cuda" if str(dev).startswith("cuda") else dev,
        build,
        cpus_per_task,
    )
    results = ResultsLog(out)
    nodes = build_graph(cfg, probe, results.done, build)
    if not nodes:
        log.info("ray: every cell of %s is done; nothing to run", cfg.name)
        return []
    started = connect(address, ray)
    if not isinstance(config, (dict, ExperimentConfig)):
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, out / f"experiment-{cfg.name}.toml")
    try:
        return _drive(ray, ctx, nodes, results, out, probe, on_cell, on_progress, max_retries)
    finally:
        if started:
            ray.shutdown()


def _cause(err: BaseException) -> BaseException:
    """The exception a task raised, out of Ray's wrapper."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _drive(ray, ctx, nodes, results, out, probe, on_cell, on_progress, max_retries) -> list[dict]:
    """Submit every node whose dependencies have ended, write each cell's line as it returns."""
    from unlearnrec.experiments.runner import keep_prepared_sidecar

    opts: dict[str, Any] = {"num_cpus": ctx.threads, "max_retries": max_retries}
    if str(ctx.device).startswith("cuda"):
        opts["num_gpus"] = 1
    remotes = {
        "setup": ray.remote(**opts)(setup_task),
        "prepare": ray.remote(**opts)(prepare_task),
        "cell": ray.remote(**opts)(cell_task),
    }
    retrain = next((m for m in ctx.config.methods if m.name == "retrain"), None)
    device = torch.device(ctx.device or "cpu")
    cells = [n for n in nodes.values() if n.kind == "cell"]
    waiting = dict(nodes)  # not yet submitted
    running: dict[Any, Node] = {}  # ObjectRef -> node
    ended: set[str] = set()
    failed: dict[str, BaseException] = {}  # setup node -> its error, inherited by the cells after it
    prepared: dict[str, tuple[float, float, bool]] = {}  # first cell -> its prepare task's figures
    written: list[dict] = []
    log.info("ray: %d tasks for %d pending cells", len(nodes), len(cells))

    seen: set[str] = set()

    def emit(rec: dict) -> None:
        if rec["cell"] in seen:
            log.warning("cell %s returned twice; its second record is dropped", rec["cell"])
            return
        seen.add(rec["cell"])
        results.append(stamp(rec))
        written.append(rec)
        if on_cell is not None:
            on_cell(rec)

    def finish_cell(node: Node, rec: dict, used_reference: bool) -> None:
        if rec["status"] == "ok":
            fig = prepared.get(node.key)
            if fig is not None and rec.get("prepare_cached") and not fig[2]:
                rec["prepare_seconds"], rec["prepare_peak_memory_mb"], rec["prepare_cached"] = fig
            if retrain is not None and used_reference:
                ref = results.latest_ok(cell_hash(node.group, retrain))
                if ref is not None:
                    from unlearnrec.experiments.cell import SUMMARY_METRICS

                    rec["reference"] = {k: ref["metrics"].get(k) for k in SUMMARY_METRICS}
            keep_prepared_sidecar(probe, out, node.group, node.spec)
            log.info("%s %s: ok", node.group.tag, node.spec.title)
        emit(rec)
        if rec["status"] == "ok":  # its result is kept: nothing to resume
            resume.discard(probe.scratch_dir(node.group, node.spec))

    def progress() -> None:
        done = sum(1 for c in cells if c.key in ended)
        run = sum(1 for n in running.values() if n.kind == "cell")
        counts = {"done": done, "running": run, "pending": len(cells) - done - run}
        log.info("ray: %(done)d done, %(running)d running, %(pending)d pending cells", counts)
        if on_progress is not None:
            on_progress(counts)

    def submit_ready() -> None:
        for key, node in list(waiting.items()):
            if not node.deps <= ended:
                continue
            del waiting[key]
            broken = next((failed[d] for d in node.deps if d in failed), None)
            if broken is not None:  # a model, attack or request it needs could not be built
                if node.kind != "cell":
                    failed[key] = broken
                else:
                    emit(error_record(ctx.config, node.group, node.spec, device, broken))
                ended.add(key)
                continue
            if node.kind == "cell":
                ref = remotes["cell"].remote(ctx, node.group, node.spec, retrain)
            elif node.kind == "prepare":
                ref = remotes["prepare"].remote(ctx, node.group, node.spec)
            else:
                ref = remotes["setup"].remote(ctx, node.kind, node.group)
            running[ref] = node

    try:
        submit_ready()
        while running or waiting:
            if not running:  # cannot happen with an acyclic graph; never spin
                raise RuntimeError(f"ray: {len(waiting)} tasks wait on tasks that never ran")
            progress()
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                node = running.pop(ref)
                try:
                    value = ray.get(ref)
                except Exception as e:  # the task raised, or its worker died more than max_retries times
                    err = _cause(e)
                    if node.kind == "cell":
                        emit(error_record(ctx.config, node.group, node.spec, device, err))
                    elif node.kind == "prepare":  # its cells prepare for themselves, as serially
                        log.warning("prepare %s %s failed: %s", node.group.tag, node.spec.title, err)
                    else:
                        log.error("%s %s failed: %s", node.kind, node.group.tag, err)
                        failed[node.key] = err
                else:
                    if node.kind == "cell":
                        finish_cell(node, *value)
                    elif node.kind == "prepare" and node.first_cell:
                        prepared[node.first_cell] = tuple(value)
                ended.add(node.key)
            submit_ready()
        progress()
    except BaseException:  # Ctrl-C or a lost driver connection: stop what runs, keep what is written
        for ref in running:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already ended
                pass
        raise
    return written
