"""Reports: pure functions from saved results to tables, figures and HTML pages. Nothing here runs a model.

One module per job:

- ``columns``: the results schema the report reads (result columns, metric labels, attack names);
- audit folders are read through ``aerobust.audit.store`` (``load_results``), their one reader;
- ``statistics``: per-trial means and spreads in the layouts of the paper's tables;
- ``tables``: statistics tables as files ("mean [95 % interval over images]" cells with counts) through the writer;
- ``flags``: the sanity flags of an audit as one table;
- ``figures``: the audit's figures (Fig. 2, robustness against fidelity, Fig. 3);
- ``page``: the self-contained HTML page;
- ``audit_report``: ``build_report``, everything for one audit directory;
- ``compare``: several audits in one report;
- ``training``: the report of a training run directory;
- ``writer``: the one writer of tables (CSV, Markdown, booktabs LaTeX, HTML) and figures (PNG + PDF);
- ``style``: the paper figure style.
"""
from .audit_report import build_report
from .columns import (ATTACK_TITLES, CLEAN_COLUMNS, EXAMPLE_COLUMNS, FLOAT_COLUMNS, INTEGER_COLUMNS, KEY_COLUMNS,
                      METRICS_BY_COLUMN, RESULT_COLUMNS, Metric)
from .compare import compare, write_comparison
from .flags import degenerate_models, lambda_flags, sanity_flags_table
from ..audit.store import AuditResults, load_results, read_examples, read_labelled_csv, read_results_csv
from ..results import lambda_text
from .statistics import (fidelity_statistics, summary_statistics, table1_statistics, table3_statistics,
                         cell_statistics)
from .tables import ablation_order, attack_panels, table2_statistics, write_statistics_table

__all__ = ["ATTACK_TITLES", "AuditResults", "CLEAN_COLUMNS", "EXAMPLE_COLUMNS", "FLOAT_COLUMNS", "INTEGER_COLUMNS",
           "KEY_COLUMNS", "METRICS_BY_COLUMN", "Metric", "RESULT_COLUMNS", "ablation_order", "build_report", "compare",
           "degenerate_models", "fidelity_statistics", "lambda_flags", "lambda_text", "load_results", "read_examples",
           "read_labelled_csv", "read_results_csv", "sanity_flags_table", "summary_statistics", "attack_panels",
           "table1_statistics", "table2_statistics", "table3_statistics", "cell_statistics", "write_comparison",
           "write_statistics_table"]
