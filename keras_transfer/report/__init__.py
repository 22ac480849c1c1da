"""The paper's findings, table and figures from a grid's run directories.

`python -m keras_transfer.report WORKDIR [--reference=yosinski2014] [--out=DIR]` reads only the
result.json and config.json files under WORKDIR, of one dataset and one network (--dataset,
--model when it holds several: n counts each network's own k cut points, and the findings'
ranges of n follow k), and writes, into WORKDIR/report by default:
results.csv (one row per run); summary.md: the paper's four findings, each with its effect, 95%
CI and a verdict, the paper's Table 1, whether the base nets converged (against their longer
twins, `baseB-x2`, where the grid's convergence experiment trained them), per condition and n the
mean top-1 with its CI (the whole-dataset random-features control beside its baseA, where it
was trained), and the decomposition per n; findings.csv (the findings and Table 1 with their
intervals and the paper's); convergence.csv (each base net beside its longer twin) when the
convergence control ran; figure2, figure3 and reduced, each as .png and .pdf, when their
runs exist; and, with --paper, hparams/ (the authors' nets for TensorBoard's HParams
dashboard; a WORKDIR's nets carry their hparams in their own TensorBoard events). Conditions
that have no runs are left out with a note. Every difference of two conditions is taken within one target
half (`findings`); the paper's values beside the measured ones are the same estimator on the
authors' own nets (`paper_nets`), and what its figure 2 means give.

`python -m keras_transfer.report --paper --out=DIR` writes the same report of the authors' nets
(github.com/yosinski/convnet_transfer, shipped in report/data; no network access), with their
metric, the mean of the best 10 of 450 evaluations.

Modules, in the order the data flows: `runs` (result.json files to a table), `paper_nets` (the
authors' nets as such a table), `stats` (intervals over splits, Spearman), `findings` (the
paper's claims and Table 1, measured), `convergence` (each base net against its longer twin;
the twins enter nothing else), `tables` (per condition and n, the decomposition, findings.csv),
`summary` (summary.md), `figures`, `hparams`, `make` (the whole report, written
atomically); `__main__` is the command line.
"""
# Imported on first use (PEP 562), so that `python -m keras_transfer.report` reaches its command
# line, which turns a Ctrl-C into one line, before scipy, pandas and matplotlib load.
_HOMES = {
    "figure2": "figures", "figure3_series": "figures", "REFERENCES": "findings",
    "YOSINSKI2014_TOP1": "findings", "make_report": "make", "ReportError": "runs",
    "load_runs": "runs", "summary_markdown": "summary", "decomposition": "tables",
    "summarize": "tables", "main": "__main__", "parser": "__main__", "run": "__main__",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"keras_transfer.report.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
