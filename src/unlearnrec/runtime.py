"""Process-level settings: the compute device, and glibc's allocator for the CPU path.

:func:`resolve_device` turns a user's ``--device`` (``cpu``, ``cuda``, ``cuda:N``) into a
``torch.device``, with one clear error when CUDA is asked for and not there. Every command that
computes (and the HTTP service) resolves its device through it.

Training on a large graph allocates and frees the same big buffers every step: the B x B similarity
matrix of an InfoNCE (268 MB at batch 8192), the propagated tables (18 MB on Yelp2018 at d = 64), their
gradients. glibc serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
hands it back with ``munmap`` when freed, and smaller ones from a heap it trims back to the OS; either
way the next step touches new pages that the kernel must fault in and zero. On Yelp2018 that was ~90,000
page faults a second and a third of the CPU time in the kernel (``benchmarks/bench_allocator.py``).

:func:`tune_allocator` tells glibc to keep what it frees (no mmap for large blocks, no trimming of the
heap), so the buffers of one step are reused by the next. The price is that the resident size stays at
its high-water mark until the process exits, which suits a command that trains, forgets or evaluates
and ends. The command line and the benchmarks call it; a library caller decides for itself.

``UNLEARNREC_ALLOCATOR=system`` turns it off; it is also left off when the caller set any of glibc's
own ``MALLOC_*`` variables (they chose), and where the C library has no ``mallopt`` (not glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

import torch

from unlearnrec.errors import ConfigError

log = logging.getLogger(__name__)

DEVICE_KINDS = ("cpu", "cuda")


def resolve_device(spec: str | torch.device | None = "cpu") -> torch.device:
    """The ``torch.device`` named by ``spec``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (None: ``"cpu"``).

    ``"cuda"`` without an index is, in a process started by ``torchrun`` (``LOCAL_RANK`` set), the
    GPU of that local rank, else the current GPU. Raises :class:`ConfigError` (one line, exit
    status 2 at the CLI) for a malformed name, another device type, CUDA asked for where torch
    sees no GPU, or a GPU index past the count.
    """
    if spec is None:
        return torch.device("cpu")
    text = str(spec).strip().lower()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {str(spec)!r} (valid: cpu, cuda, cuda:N)") from None
    if dev.type not in DEVICE_KINDS:
        raise ConfigError(f"unsupported device {str(spec)!r} (valid: cpu, cuda, cuda:N)")
    if dev.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {str(spec)!r} asked for, but torch {torch.__version__} sees no CUDA GPU "
            "(use --device cpu)"
        )
    count = torch.cuda.device_count()
    index = dev.index
    if index is None:
        local = os.environ.get("LOCAL_RANK")
        index = int(local) if local is not None and local.isdigit() else torch.cuda.current_device()
    if index >= count:
        raise ConfigError(f"device {str(spec)!r}: no GPU {index} (this machine has {count})")
    return torch.device("cuda", index)


ENV = "UNLEARNREC_ALLOCATOR"
MODES = ("keep", "system")

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

_applied: str | None = None


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def tune_allocator(mode: str | None = None) -> str:
    """Make glibc keep freed memory for reuse (``"keep"``) or leave it alone (``"system"``).

    ``mode`` defaults to ``$UNLEARNREC_ALLOCATOR``, else ``"keep"``. Returns what is in effect:
    ``"keep"`` when the settings were applied (now or by an earlier call), otherwise ``"system"``.
    Raises ``ValueError`` on an unknown mode. Idempotent; it cannot be undone within the process.
    """
    global _applied
    mode = (mode or os.environ.get(ENV) or "keep").strip().lower()
    if mode not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}, got {mode!r}")
    if _applied == "keep":
        return "keep"
    if mode == "system":
        return "system"
    chosen = sorted(k for k in os.environ if k.startswith("MALLOC_") and k.endswith("_"))
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        chosen.append("GLIBC_TUNABLES")
    if chosen:
        log.info("allocator: left as set by %s", ", ".join(chosen))
        return "system"
    libc = _libc()
    if libc is None:
        return "system"
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, _INT_MAX) == 1
    if not ok:
        log.info("allocator: mallopt refused the settings; left as it was")
        return "system"
    _applied = "keep"
    log.info("allocator: glibc keeps freed memory for reuse (%s=system to turn off)", ENV)
    return "keep"


def release_free_memory() -> bool:
    """Give the memory glibc holds free back to the OS (``malloc_trim(0)``); False where unavailable.

    A peak-memory reading that takes the resident size as its baseline calls this first: otherwise the
    measured block would reuse memory freed (and kept) before it, and its growth would read too low.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) plus glibc's own variables for the setting in effect here.

    For a child process that never calls :func:`tune_allocator` (a reference implementation in another
    virtual environment), so that it runs with the same allocator as this process.
    """
    env = dict(os.environ if base is None else base)
    if _applied == "keep":
        env.setdefault("MALLOC_MMAP_MAX_", "0")
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(_INT_MAX))
    return env
