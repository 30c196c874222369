"""The ``unlearnrec`` parser and entry point: one-line errors with exit status 2, no traceback; output
to a closed pipe ends quietly."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from unlearnrec import __version__
from unlearnrec.cli.common import Parser
from unlearnrec.errors import TrainingError, UnlearnRecError
from unlearnrec.runtime import tune_allocator


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="unlearnrec", description="Make GNN recommenders forget.")
    p.add_argument("--version", action="version", version=f"unlearnrec {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO) to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, data=True):
        if data:
            sp.add_argument("--data-dir", default=None, help="dataset root (default: $UNLEARNREC_DATA)")
        sp.add_argument("--json", action="store_true", help="print one JSON object")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    from unlearnrec.cli import audit, experiments, forget, models
    from unlearnrec.serve import cli as serve_cli  # the service's command (its packages load when it runs)

    for mod in (models, forget, audit, experiments, serve_cli):
        mod.register(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a failed check, 2 bad input).

    Output to a closed pipe (``unlearnrec ledger x --json | head -1``) ends quietly with 141
    (128 + SIGPIPE, as a tool killed by SIGPIPE reports it).
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        _silence_stdout()
        return 141


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured in tests)
        pass


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed on one line)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        tune_allocator()
    except ValueError as e:
        print(f"unlearnrec: error: {e}", file=sys.stderr)
        return 2
    from unlearnrec.train.distributed import PARALLEL_COMMANDS, env_world_size

    if env_world_size() > 1 and args.command not in PARALLEL_COMMANDS:
        # every rank would run the whole command and write the same files
        print(
            f"unlearnrec: error: '{args.command}' does not run under torchrun (WORLD_SIZE="
            f"{env_world_size()}); only {', '.join(PARALLEL_COMMANDS)} do",
            file=sys.stderr,
        )
        return 2
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # surface a closed pipe here, not in the interpreter's exit
        return status
    except UnlearnRecError as e:
        print(f"unlearnrec: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except TrainingError as e:  # diverged: a setting to change (the message names it), nothing saved
        print(f"unlearnrec: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except OSError as e:  # a path that cannot be read or written (a directory, no permission, disk full)
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"unlearnrec: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unlearnrec: interrupted", file=sys.stderr)
        return 130
    finally:
        from unlearnrec.train.distributed import leave

        leave()  # a torchrun rank that failed leaves its process group before the interpreter exits


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
