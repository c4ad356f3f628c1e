"""Paper-layout tables rendered from the stored run records, with the published numbers beside ours.

A table is a data file (``bench/published/NAME.json``): its column blocks (a protocol, the input view the paper
used, the metrics), the bit lengths, and per row (method) the numbers the paper printed. Each method gets two
rows, the paper's and ours (mean +- std over seeds, then the difference to the paper); the best of our rows in
each column is bold. Footnotes come from the records used.

Which runs enter: those of the row's method whose config is the default except for the row's ``set`` (an
ablation row, e.g. HashGAN-Q = ``{"beta": 0}``) and the table-wide overrides given to ``build``/``render``
(``bench table NAME --set iterations=500``: a reduced schedule; each applies to the rows whose method has that
field, and the notes say so; a row's own ``set`` wins over them).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.results import load_results, scoped, wanted_overrides

PUBLISHED = Path(__file__).parent / "published"
METRIC_LABELS = {"map": "mAP", "map_tie_aware": "mAP (tie-aware)", "p@h<=2": "P@H<=2", "nmi": "NMI", "acc": "ACC"}
FORMATS = ("markdown", "latex")


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    source: str
    bits: tuple
    blocks: tuple  # dicts: label, protocol, input, metrics, paper_setup
    rows: tuple  # dicts: method, label, published {protocol: {metric: [value per bits]}}, and optionally
    # input (the view this row's runs use when not the block's, e.g. "images" for the deep methods), n_bits (the
    # code length of this row's runs whatever the column's: 0 for k-means on pixels, which has no codes) and
    # published_only (a method the harness does not run: only the paper's row is shown), set (the Config fields
    # this row's runs change from the default: the ablation rows)
    notes: tuple = ()
    speed_bits: int | None = None  # add fit/encode seconds at this code length after each block
    scale: float = 100.0  # values shown x scale (the paper's own scale: 100 for %, 1 for NMI/ACC in [0, 1])
    decimals: int = 2

    @classmethod
    def from_file(cls, path: Path) -> "TableSpec":
        d = json.loads(Path(path).read_text())
        return cls(d["name"], d["title"], d["source"], tuple(d["bits"]), tuple(d["blocks"]), tuple(d["rows"]),
                   tuple(d.get("notes", ())), d.get("speed_bits"), d.get("scale", 100.0), d.get("decimals", 2))

    def columns(self) -> list["Column"]:
        """Every column in display order: per block, each metric at each bit length, then the timings."""
        out = []
        for b in self.blocks:
            out += [Column(b, m, n, metric_label(m), str(n) if len(self.bits) > 1 else f"{n}-bit codes")
                    for m in b["metrics"] for n in self.bits]
            if self.speed_bits:
                out += [Column(b, t, self.speed_bits, f"time (s), {self.speed_bits} bits", sub)
                        for t, sub in (("fit_s", "fit"), ("encode_s", "encode"))]
        return out


@dataclasses.dataclass(frozen=True)
class Column:
    block: dict
    metric: str  # a metric key, or a timing key (fit_s, encode_s): seconds, shown as they are
    bits: int
    group: str  # header line 2 (line 1 is the block's label)
    sub: str  # header line 3

    @property
    def is_time(self) -> bool:
        return self.metric.endswith("_s")


@hookimpl
def bench_tables():
    return [TableSpec.from_file(p) for p in sorted(PUBLISHED.glob("*.json"))]


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("map@", "mAP@"))


def _runs(frame: pd.DataFrame, row: dict, extra: dict) -> pd.DataFrame:
    """The frame's rows (one per run and metric) that fill a table row."""
    if frame.empty:
        return frame
    # The row's own fields win over the table-wide ones, which may name the method (``METHOD.key``).
    fields = {**scoped(extra, row["method"]), **row.get("set", {})}
    runs = frame[frame["method"] == row["method"]]
    wanted = {n_bits: wanted_overrides(row["method"], fields, n_bits) for n_bits in runs["n_bits"].unique()}
    return runs[runs["overrides"] == runs["n_bits"].map(wanted)]


def _ours(runs: pd.DataFrame, spec: TableSpec) -> dict:
    """{(protocol, input, metric, n_bits): (mean, std, n)} x scale over seeds."""
    if runs.empty:
        return {}
    # One value per cell and seed: a config stored by an older version of the method counts once, newest.
    keys = ["protocol", "input", "n_bits", "seed", "metric"]
    runs = runs.sort_values("created").drop_duplicates(keys, keep="last")
    out = runs.groupby(["protocol", "input", "metric", "n_bits"])["value"].agg(mean="mean", std="std", n="count")
    index = {}
    for (protocol, view, metric, n_bits), r in out.iterrows():
        scale = 1.0 if metric.endswith("_s") else spec.scale  # seconds as they are
        std = 0.0 if pd.isna(r["std"]) else r["std"]
        index[(protocol, view, metric, n_bits)] = (r["mean"] * scale, std * scale, int(r["n"]))
    return index


def build(spec: TableSpec, results_dir=None, overrides: dict | None = None) -> dict:
    """The table's cells: {"header": [...], "rows": [[label, cell...]], "best": set of (row, col), "notes": [...]}.
    Cells are (mean, std, n, paper) tuples for our rows and floats for the paper's. ``overrides``: table-wide
    config fields the runs must have (a reduced schedule, say), for the rows whose method has them."""
    overrides = dict(overrides or {})
    frame = load_results(results_dir)
    columns = spec.columns()
    rows, best, used = [], set(), []
    for row in spec.rows:
        paper = [None if c.is_time else
                 row["published"].get(c.block["protocol"], {}).get(c.metric, [None] * len(spec.bits))[
                     spec.bits.index(c.bits)] for c in columns]
        runs = _runs(frame, row, overrides) if not row.get("published_only") else frame.iloc[0:0]
        used.append((row, runs))
        index = _ours(runs, spec)
        mine = [index.get((c.block["protocol"], row.get("input", c.block["input"]), c.metric,
                           row.get("n_bits", c.bits))) for c in columns]
        if any(p is not None for p in paper):
            rows.append((f"{row['label']} (paper)", paper))
        if not row.get("published_only"):
            rows.append((f"{row['label']} (ours)", [None if m is None else (*m, p) for m, p in zip(mine, paper)]))
    for j, c in enumerate(columns):
        values = [(i, r[1][j][0]) for i, r in enumerate(rows) if r[0].endswith("(ours)") and r[1][j] is not None]
        if values and not c.is_time:
            best.add((max(values, key=lambda v: v[1])[0], j))
    scale = f"Values x{spec.scale:g}. " if spec.scale != 1 else ""
    notes = [f"Source: {spec.source}. {scale}Ours: mean ± std over seeds (no ± where one seed), then (ours - paper)."]
    if overrides:
        notes.append("Ours are runs with " + ", ".join(f"{k}={v}" for k, v in overrides.items()) +
                     " (not the default config) in the rows whose method has those settings.")
    if spec.speed_bits:
        notes.append(f"Times: mean seconds to fit (training set) and to encode (queries and database) at "
                     f"{spec.speed_bits} bits, on the device each run used (its environment is in the record); a fit "
                     f"resumed from a checkpoint has no fit time (its seconds cover only the resumed part).")
    for b in spec.blocks:
        seeds, devices = [], set()
        for row, runs in used:
            view = row.get("input", b["input"])
            mine = runs[(runs["protocol"] == b["protocol"]) & (runs["input"] == view)] if not runs.empty else runs
            if not mine.empty:
                seeds.append(f"{row['label']} {sorted(mine['seed'].unique().tolist())}")
                devices |= set(mine["device"].unique().tolist())
        retrieval = any(m.startswith(("map", "p@")) for m in b["metrics"])
        semantics = "; ranking ties broken by database index; queries without relevant items count AP 0" \
            if retrieval else ""
        notes.append(f"{b['label']}: protocol {b['protocol']}, input {b['input']} (paper: {b['paper_setup']}); "
                     f"our seeds: {'; '.join(seeds) or 'no runs yet'}; devices: {', '.join(sorted(devices)) or '-'}"
                     f"{semantics}.")
    notes += list(spec.notes)
    return {"columns": columns, "rows": rows, "best": best, "notes": notes}


def _fmt_ours(cell, latex: bool, bold: bool, is_time: bool = False, decimals: int = 2) -> str:
    if cell is None:
        return "-"
    mean, std, n, paper = cell
    if is_time:
        return f"{mean:.2f}"
    pm = r"$\pm$" if latex else "±"
    value = f"{mean:.{decimals}f}"
    value = (r"\textbf{%s}" if latex else "**%s**") % value if bold else value
    diff = "" if paper is None else f" ({mean - paper:+.{decimals}f})"
    if latex:
        diff = diff.replace("-", "$-$")
    spread = f" {pm} {std:.{decimals}f}" if n > 1 else ""  # one seed has no spread to show
    return f"{value}{spread}{diff}"


def render(spec: TableSpec, fmt: str = "markdown", results_dir=None, overrides: dict | None = None) -> str:
    if fmt not in FORMATS:
        raise BenchError(f"unknown format {fmt!r} (choices: {', '.join(FORMATS)})")
    t = build(spec, results_dir, overrides)
    latex = fmt == "latex"
    body = []
    for i, (label, cells) in enumerate(t["rows"]):
        if label.endswith("(paper)"):
            body.append([label] + ["-" if c is None else f"{c:.{spec.decimals}f}" for c in cells])
        else:
            body.append([label] + [_fmt_ours(c, latex, (i, j) in t["best"], t["columns"][j].is_time, spec.decimals)
                                   for j, c in enumerate(cells)])
    if not latex:
        header = ["Method"] + [f"{c.block['label']} {c.group} {c.sub}" for c in t["columns"]]
        table = tabulate(body, headers=header, tablefmt="github", disable_numparse=True)
        notes = "\n".join(f"- {n}" for n in t["notes"])
        return f"**{spec.title}**\n\n{table}\n\n{notes}\n"
    return _latex(spec, t, body)


def _spans(labels):
    """Runs of equal consecutive labels: [(label, length)]."""
    spans = []
    for label in labels:
        if spans and spans[-1][0] == label:
            spans[-1][1] += 1
        else:
            spans.append([label, 1])
    return spans


def _latex(spec: TableSpec, t: dict, body) -> str:
    columns = t["columns"]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\caption{%s}" % _tex(spec.title), r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule"]
    blocks = _spans([c.block["label"] for c in columns])
    groups = _spans([(c.block["label"], c.group) for c in columns])
    lines.append(" & " + " & ".join(r"\multicolumn{%d}{c}{%s}" % (n, _tex(label)) for label, n in blocks) + r" \\")
    lines.append(" & " + " & ".join(r"\multicolumn{%d}{c}{%s}" % (n, _tex(label[1])) for label, n in groups)
                 + r" \\")
    start, rules = 2, []
    for _, n in groups:
        rules.append(r"\cmidrule(lr){%d-%d}" % (start, start + n - 1))
        start += n
    lines.append(" ".join(rules))
    lines.append("Method & " + " & ".join(_tex(c.sub) for c in columns) + r" \\")
    lines.append(r"\midrule")
    for k, row in enumerate(body):
        lines.append(" & ".join([_tex(row[0])] + row[1:]) + r" \\")
        if k + 1 < len(body) and _method_label(body[k + 1][0]) != _method_label(row[0]):  # between methods
            lines.append(r"\addlinespace")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip\parbox{\linewidth}{\footnotesize " +
              " ".join(_tex(n) for n in t["notes"]) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _method_label(label: str) -> str:
    return label.rsplit(" (", 1)[0]


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("<=", r"$\leq$")):
        text = text.replace(a, b)
    return text
