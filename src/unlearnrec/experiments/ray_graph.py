"""The task graph of a grid on Ray (:mod:`~unlearnrec.experiments.ray_runner`): which entries and cells
are missing, and what each waits for. Pure: it reads the cache's folders, no data, and imports no ray."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from unlearnrec.experiments.cell import Builder
from unlearnrec.experiments.grid import ExperimentConfig, Group, MethodSpec, cell_hash, groups, prepare_hash
from unlearnrec.experiments.store import Store

log = logging.getLogger(__name__)


@dataclass
class Node:
    """One task of the grid's graph: what to call, after which other nodes, for which cells."""

    key: str
    kind: str  # clean, attack, model, request, prepare, cell
    group: Group
    spec: MethodSpec | None = None
    deps: set[str] = field(default_factory=set)
    first_cell: str = ""  # prepare: the first cell (serial order) that uses the state


def _persists(spec: MethodSpec, build: Builder | None) -> bool:
    """Whether a method keeps what ``prepare`` built (so a separate task is worth running): its class
    overrides ``save_prepared``. The method is built (not prepared) to find its class; one that cannot
    be built fails in its cell."""
    from unlearnrec.unlearn.base import Unlearner
    from unlearnrec.unlearn.registry import build_method

    try:
        method = (build or build_method)(spec.name, dict(spec.config), 0)
    except Exception:
        return False
    return type(method).save_prepared is not Unlearner.save_prepared


def build_graph(
    config: ExperimentConfig, probe: Store, done: set[str], build: Builder | None
) -> dict[str, Node]:
    """The tasks that the pending cells of ``config`` need, in the serial runner's order (no data is
    read: entries already in the cache are left out)."""
    nodes: dict[str, Node] = {}
    methods = sorted(config.methods, key=lambda m: m.name != "retrain")
    retrain = next((m for m in methods if m.name == "retrain"), None)
    persists = {m.title: _persists(m, build) for m in methods}

    def add(key: str, kind: str, group: Group, deps=(), spec: MethodSpec | None = None) -> str:
        if key not in nodes:
            nodes[key] = Node(key, kind, group, spec, {d for d in deps if d in nodes})
        return key

    for group in groups(config):
        pending = [m for m in methods if cell_hash(group, m) not in done]
        if not pending:
            log.info("group %s done; skipped", group.tag)
            continue
        setup: list[str] = []
        if not probe.has_model(group):
            deps: list[str] = []
            if group.request == "adversarial":
                if not (probe.model_dir(group.clean_hash) / "meta.json").is_file():
                    deps.append(add(f"clean:{group.clean_hash}", "clean", group))
                deps = [add(f"attack:{group.clean_hash}:{group.ratio!r}", "attack", group, deps)]
            setup.append(add(f"model:{group.attacked_hash}", "model", group, deps))
        if group.request != "adversarial":
            folder = probe._entry("requests", group.request_key)
            if not (folder / "meta.json").is_file():
                setup.append(add(f"request:{group.request_key}", "request", group))
        retrain_key = cell_hash(group, retrain) if retrain is not None else ""
        for spec in pending:
            key = cell_hash(group, spec)
            deps = list(setup)
            if persists[spec.title] and not probe.prepared_dir(group, spec).is_dir():
                pk = add(f"prepare:{prepare_hash(group, spec)}", "prepare", group, setup, spec)
                nodes[pk].first_cell = nodes[pk].first_cell or key
                deps.append(pk)
            if spec is not retrain:
                deps.append(retrain_key)  # left out by add() when Retrain is done or absent
            add(key, "cell", group, deps, spec)
    return nodes
