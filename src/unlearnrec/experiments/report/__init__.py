"""Reports of an experiment folder: :mod:`tables` (Markdown / CSV), :mod:`plots` (figures),
:mod:`html` (one page, Jinja2 template), :mod:`paper` (the paper's numbers beside ours).

The Markdown / CSV functions are re-exported here (the names of ``experiments/report.py`` before it
became this package)."""

from unlearnrec.experiments.report.tables import Cell, report, table_cells, to_csv, to_markdown

__all__ = ["Cell", "report", "table_cells", "to_csv", "to_markdown"]
