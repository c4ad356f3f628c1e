"""Paper-layout tables rendered from the stored run records, with the published numbers beside ours.

A table is a data file (``bench/published/NAME.json``): its column blocks (a protocol, the input view the paper
used, the metrics), the bit lengths, and per row (method) the numbers the paper printed. Each method gets two
rows, the paper's and ours (mean +- std over seeds, then the difference to the paper); the best of our rows in
each column is bold. Only default-config runs enter a table. Footnotes come from the records used.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.results import load_results

PUBLISHED = Path(__file__).parent / "published"
METRIC_LABELS = {"map": "mAP", "map_tie_aware": "mAP (tie-aware)", "p@h<=2": "P@H<=2"}
FORMATS = ("markdown", "latex")


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    source: str
    bits: tuple
    blocks: tuple  # dicts: label, protocol, input, metrics, paper_setup
    rows: tuple  # dicts: method, label, published {protocol: {metric: [value per bits]}}
    notes: tuple = ()

    @classmethod
    def from_file(cls, path: Path) -> "TableSpec":
        d = json.loads(Path(path).read_text())
        return cls(d["name"], d["title"], d["source"], tuple(d["bits"]), tuple(d["blocks"]), tuple(d["rows"]),
                   tuple(d.get("notes", ())))

    def columns(self):
        """(block, metric, bits) in display order."""
        return [(b, m, n) for b in self.blocks for m in b["metrics"] for n in self.bits]


@hookimpl
def bench_tables():
    return [TableSpec.from_file(p) for p in sorted(PUBLISHED.glob("*.json"))]


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("map@", "mAP@"))


def _ours(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """x100 mean, std and seed count per (method, protocol, input, metric, n_bits), default configs only."""
    if frame.empty:
        return pd.DataFrame(columns=["method", "protocol", "input", "metric", "n_bits", "mean", "std", "n"])
    wanted = frame[frame["default_config"] & frame["method"].isin([r["method"] for r in spec.rows])]
    grouped = wanted.groupby(["method", "protocol", "input", "metric", "n_bits"])["value"]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    out["mean"] *= 100
    out["std"] = out["std"].fillna(0.0) * 100
    return out


def build(spec: TableSpec, results_dir=None) -> dict:
    """The table's cells: {"header": [...], "rows": [[label, cell...]], "best": set of (row, col), "notes": [...]}.
    Cells are (mean, std, n, paper) tuples for our rows and floats for the paper's."""
    frame = load_results(results_dir)
    ours = _ours(frame, spec)
    index = {tuple(r[:5]): (r[5], r[6], r[7]) for r in ours.itertuples(index=False)}
    columns = spec.columns()
    rows, best = [], set()
    for row in spec.rows:
        paper = [row["published"].get(b["protocol"], {}).get(m, [None] * len(spec.bits))[spec.bits.index(n)]
                 for b, m, n in columns]
        mine = [index.get((row["method"], b["protocol"], b["input"], m, n)) for b, m, n in columns]
        rows.append((f"{row['label']} (paper)", paper))
        rows.append((f"{row['label']} (ours)", [None if c is None else (*c, p) for c, p in zip(mine, paper)]))
    for j in range(len(columns)):
        values = [(i, r[1][j][0]) for i, r in enumerate(rows) if r[0].endswith("(ours)") and r[1][j] is not None]
        if values:
            best.add((max(values, key=lambda v: v[1])[0], j))
    used = frame[frame["default_config"] & frame["method"].isin([r["method"] for r in spec.rows])] \
        if not frame.empty else frame
    notes = [f"Source: {spec.source}. Values x100. Ours: mean ± std over seeds, then (ours - paper)."]
    for b in spec.blocks:
        runs = used[(used["protocol"] == b["protocol"]) & (used["input"] == b["input"])] if not used.empty else used
        seeds = "; ".join(f"{r['label']} {sorted(runs[runs['method'] == r['method']]['seed'].unique().tolist())}"
                          for r in spec.rows if not runs.empty and (runs["method"] == r["method"]).any())
        devices = sorted(runs["device"].unique().tolist()) if not runs.empty else []
        notes.append(f"{b['label']}: protocol {b['protocol']}, input {b['input']} (paper: {b['paper_setup']}); "
                     f"our seeds: {seeds or 'no runs yet'}; devices: {', '.join(devices) or '-'}; ranking ties "
                     f"broken by database index; queries without relevant items count AP 0.")
    notes += list(spec.notes)
    return {"columns": columns, "rows": rows, "best": best, "notes": notes}


def _fmt_ours(cell, latex: bool, bold: bool) -> str:
    if cell is None:
        return "-"
    mean, std, n, paper = cell
    pm = r"$\pm$" if latex else "±"
    value = (r"\textbf{%.2f}" if latex else "**%.2f**") % mean if bold else f"{mean:.2f}"
    diff = "" if paper is None else f" ({mean - paper:+.2f})"
    if latex:
        diff = diff.replace("-", "$-$")
    return f"{value} {pm} {std:.2f}{diff}"


def render(spec: TableSpec, fmt: str = "markdown", results_dir=None) -> str:
    if fmt not in FORMATS:
        raise BenchError(f"unknown format {fmt!r} (choices: {', '.join(FORMATS)})")
    t = build(spec, results_dir)
    latex = fmt == "latex"
    body = []
    for i, (label, cells) in enumerate(t["rows"]):
        if label.endswith("(paper)"):
            body.append([label] + ["-" if c is None else f"{c:.2f}" for c in cells])
        else:
            body.append([label] + [_fmt_ours(c, latex, (i, j) in t["best"]) for j, c in enumerate(cells)])
    if not latex:
        header = ["Method"] + [f"{b['label']} {metric_label(m)} {n}" for b, m, n in t["columns"]]
        table = tabulate(body, headers=header, tablefmt="github", disable_numparse=True)
        notes = "\n".join(f"- {n}" for n in t["notes"])
        return f"**{spec.title}**\n\n{table}\n\n{notes}\n"
    return _latex(spec, t, body)


def _latex(spec: TableSpec, t: dict, body) -> str:
    n_bits = len(spec.bits)
    groups = [(b, m) for b in spec.blocks for m in b["metrics"]]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\caption{%s}" % _tex(spec.title), r"\begin{tabular}{l" + "r" * len(t["columns"]) + "}",
             r"\toprule"]
    lines.append(" & " + " & ".join(r"\multicolumn{%d}{c}{%s}" % (n_bits * len(b["metrics"]), _tex(b["label"]))
                                    for b in spec.blocks) + r" \\")
    lines.append(" & " + " & ".join(r"\multicolumn{%d}{c}{%s}" % (n_bits, _tex(metric_label(m)))
                                    for _, m in groups) + r" \\")
    lines.append(" ".join(r"\cmidrule(lr){%d-%d}" % (2 + k * n_bits, 1 + (k + 1) * n_bits)
                          for k in range(len(groups))))
    lines.append("Method & " + " & ".join(str(n) for _, _, n in t["columns"]) + r" \\")
    lines.append(r"\midrule")
    for k, row in enumerate(body):
        lines.append(" & ".join([_tex(row[0])] + row[1:]) + r" \\")
        if k % 2 == 1 and k + 1 < len(body):
            lines.append(r"\addlinespace")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip\parbox{\linewidth}{\footnotesize " +
              " ".join(_tex(n) for n in t["notes"]) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("<=", r"$\leq$")):
        text = text.replace(a, b)
    return text
