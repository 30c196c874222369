"""The ``unlearnrec`` command line: the only package that imports argparse or tqdm.

A thin layer over the library: :mod:`app` (the parser, the entry point, one-line errors),
:mod:`common` (shared option types, output checks, printing, the progress bar), and one module per
group of commands: :mod:`models` (train, evaluate, recommend, data), :mod:`forget` (pretrain, forget),
:mod:`audit` (sample-request, verify, ledger), :mod:`experiments` (experiment, report, study).
"""

from unlearnrec.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
