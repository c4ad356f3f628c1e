"""Tables rendered from the stored run records, in the papers' layout, with the published numbers beside ours.

A table is a data file (``bench/published/NAME.json``): its column blocks (a dataset: protocol, the input view the
paper used, the metrics), the code lengths, and its rows. A row names a method and a recipe (``bench.recipes``;
``default`` when absent), optionally a ``set`` of fields on top of the recipe, and the numbers the paper printed.
Kinds:
- ``paper``: the paper's rows only; each cell is ours (mean ± std over seeds) with the paper's number in
  parentheses, in the paper's column groups (dataset x metric x bits).
- ``recipes``: our explorations of a paper table's rows (other recipes of a method), each note saying what its
  recipe changes.
A table with ``speed_bits`` also has a speed table, ``NAME-speed``: fit and encode seconds at that code length.
``bench table NAME --recipe R`` lays the recipe ``R`` under every row whose method declares it (a reduced
schedule, say); a table's ``recipes`` lists those with a committed render. Deviations stay as footnotes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tabulate import tabulate

from bench import recipes
from bench.errors import BenchError, unknown
from bench.hookspecs import hookimpl
from bench.results import read_records

PUBLISHED = Path(__file__).parent / "published"
METRIC_LABELS = {
    "map": "mAP",
    "map_tie_aware": "mAP (tie-aware)",
    "p@h<=2": "P@H<=2",
    "nmi": "NMI",
    "acc": "ACC",
    "fit_s": "fit (s)",
    "encode_s": "encode (s)",
}
FORMATS = ("markdown", "latex")
KINDS = ("paper", "recipes", "speed")
TERMINAL_WIDTH = 160  # a markdown table wider than this is split by metric


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    source: str
    bits: tuple
    blocks: tuple  # dicts: label, protocol, input, metrics, paper_setup
    rows: tuple  # dicts: method, label, recipe, set, published {protocol: {metric: [value per bits]}}, and
    # optionally input (the view this row's runs use when not the block's, e.g. "images" for the deep methods),
    # n_bits (the code length of this row's runs whatever the column's: 0 for k-means on pixels, which has no
    # codes) and published_only (a method the harness does not run: only the paper's number is shown)
    notes: tuple = ()
    kind: str = "paper"
    speed_bits: int | None = None  # a NAME-speed table of fit/encode seconds at this code length
    scale: float = 100.0  # values shown x scale (the paper's own scale: 100 for %, 1 for NMI/ACC in [0, 1])
    decimals: int = 2
    recipes: tuple = ()  # table-wide recipes whose renders are committed (results/render.sh)

    @classmethod
    def from_file(cls, path: Path) -> TableSpec:
        d = json.loads(Path(path).read_text())
        if d.get("kind", "paper") not in KINDS:
            raise BenchError(f"table {path}: unknown kind {d['kind']!r} (choices: {', '.join(KINDS)})")
        return cls(
            d["name"],
            d["title"],
            d["source"],
            tuple(d["bits"]),
            tuple(d["blocks"]),
            tuple(d["rows"]),
            tuple(d.get("notes", ())),
            d.get("kind", "paper"),
            d.get("speed_bits"),
            d.get("scale", 100.0),
            d.get("decimals", 2),
            tuple(d.get("recipes", ())),
        )

    def speed(self) -> TableSpec:
        """The fit and encode times of this table's rows at ``speed_bits``."""
        return dataclasses.replace(
            self,
            name=f"{self.name}-speed",
            kind="speed",
            notes=(),
            title=f"{self.title}: fit and encode times at {self.speed_bits} bits",
        )

    def columns(self) -> list[Column]:
        """Every column in display order: per block, each metric at each code length (speed: fit, encode)."""
        if self.kind == "speed":
            return [Column(b, t, self.speed_bits) for b in self.blocks for t in ("fit_s", "encode_s")]
        return [Column(b, m, n) for b in self.blocks for m in b["metrics"] for n in self.bits]


@dataclasses.dataclass(frozen=True)
class Column:
    block: dict
    metric: str  # a metric key, or a timing key (fit_s, encode_s): seconds, shown as they are
    bits: int

    @property
    def is_time(self) -> bool:
        return self.metric.endswith("_s")

    def published(self, row: dict, bits: tuple):
        values = row.get("published", {}).get(self.block["protocol"], {}).get(self.metric)
        return None if values is None or self.is_time else values[bits.index(self.bits)]


@hookimpl
def bench_tables():
    specs = [TableSpec.from_file(p) for p in sorted(PUBLISHED.glob("*.json"))]
    return specs + [s.speed() for s in specs if s.speed_bits]


def committed_renders(tables) -> list[tuple[TableSpec, str | None, str]]:
    """Every render ``results/render.sh`` commits: (table, table-wide recipe or None, file stem), each table at
    its rows' own recipes and at each recipe it lists (``NAME-RECIPE``)."""
    out = []
    for spec in tables:
        base = spec.name.removesuffix("-speed")
        listed = next((t.recipes for t in tables if t.name == base), spec.recipes)
        stem = spec.name
        out += [(spec, None, stem)] + [
            (spec, r, f"{base}-{r}" + ("-speed" if spec.kind == "speed" else "")) for r in listed
        ]
    return out


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("map@", "mAP@"))


def row_runs(row: dict, block: dict, bits: tuple, records: list[dict], recipe: str | None = None) -> list[dict]:
    """The stored runs of ``row`` in ``block``: its method at the config its recipe (under the table-wide
    ``recipe``) resolves to at each code length, on the block's protocol and the row's input view."""
    from bench.registry import get_registry

    cls = get_registry().methods.get(row["method"])
    if cls is None or row.get("published_only"):
        return []
    lengths = [row["n_bits"]] if "n_bits" in row else list(bits)
    hashes = {n: recipes.hash_of(cls, n, row.get("recipe", recipes.DEFAULT), row.get("set"), recipe) for n in lengths}
    return recipes.select(records, cls.name, hashes, block["protocol"], row.get("input", block["input"]))


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, std, n


def build(spec: TableSpec, results_dir=None, recipe: str | None = None, records: list[dict] | None = None) -> dict:
    """The table's cells: {"columns", "rows": [{"label", "row", "ours": [(mean, std, n) or None], "paper": [float
    or None], "runs": [records]}], "best": {(row index, column index)}, "notes"}. ``recipe``: a table-wide recipe
    laid under every row whose method declares it."""
    records = read_records(results_dir) if records is None else records
    if recipe is not None:
        check_table_recipe(spec, recipe)
    columns = spec.columns()
    rows = []
    for row in spec.rows:
        runs = {b["label"]: row_runs(row, b, spec.bits, records, recipe) for b in spec.blocks}
        ours = []
        for c in columns:
            n_bits = row.get("n_bits", c.bits)
            values = [
                r["timings"][c.metric] if c.is_time else r["metrics"][c.metric]
                for r in runs[c.block["label"]]
                if r["n_bits"] == n_bits and c.metric in (r["timings"] if c.is_time else r["metrics"])
            ]
            scale = 1.0 if c.is_time else spec.scale
            ours.append(
                None if not values else tuple(v * scale if i < 2 else v for i, v in enumerate(_mean_std(values)))
            )
        rows.append(
            {
                "label": row["label"],
                "row": row,
                "ours": ours,
                "runs": runs,
                "paper": [c.published(row, spec.bits) for c in columns],
            }
        )
    best = set()
    for j, c in enumerate(columns):
        values = [(i, r["ours"][j][0]) for i, r in enumerate(rows) if r["ours"][j] is not None]
        if values and not c.is_time:
            best.add((max(values, key=lambda v: v[1])[0], j))
    return {"columns": columns, "rows": rows, "best": best, "notes": _notes(spec, rows, recipe)}


def check_table_recipe(spec: TableSpec, recipe: str) -> None:
    from bench.registry import get_registry

    methods = get_registry().methods
    known = sorted({name for row in spec.rows if row["method"] in methods for name in methods[row["method"]].recipes})
    if recipe not in known:
        raise unknown(f"recipe for the rows of {spec.name}", recipe, known or ["(its methods declare none)"])


def _notes(spec: TableSpec, rows: list[dict], recipe: str | None) -> list[str]:
    from bench.registry import get_registry

    methods = get_registry().methods
    scale = f"Values x{spec.scale:g}. " if spec.scale != 1 and spec.kind != "speed" else ""
    what = (
        "Mean seconds to fit (training set) and to encode (queries and database), on the device each run used "
        "(its environment is in the record); a fit resumed from a checkpoint has no fit time"
        if spec.kind == "speed"
        else "Ours: mean ± std over seeds (no ± where one seed), the paper's number in "
        "parentheses; the best of ours in each column in bold"
    )
    notes = [f"Source: {spec.source}. {scale}{what}."]
    if recipe is not None:
        used = sorted(
            {r["row"]["method"] for r in rows if recipe in getattr(methods.get(r["row"]["method"]), "recipes", {})}
        )
        notes.append(
            f"Ours are runs of the recipe {recipe!r} (not the default config) in the rows whose method "
            f"declares it: " + "; ".join(f"{m} ({_fields(methods[m].recipes[recipe])})" for m in used) + "."
        )
    if spec.kind == "recipes":
        for r in rows:
            row = r["row"]
            fields = (
                {**recipes.overrides(methods[row["method"]], row.get("recipe", recipes.DEFAULT)), **row.get("set", {})}
                if row["method"] in methods
                else {}
            )
            notes.append(
                f"{r['label']}: {row['method']} recipe {row.get('recipe', recipes.DEFAULT)!r}"
                f"{' with ' + _fields(row['set']) if row.get('set') else ''}"
                f" ({_fields(fields) or 'the default config'})."
            )
    for b in spec.blocks:
        seeds, devices = [], set()
        for r in rows:
            mine = r["runs"][b["label"]]
            if mine:
                seeds.append(f"{r['label']} {sorted({x['seed'] for x in mine})}")
                devices |= {x["environment"]["device"] for x in mine}
        retrieval = any(m.startswith(("map", "p@")) for m in b["metrics"])
        semantics = (
            "; ranking ties broken by database index; queries without relevant items count AP 0" if retrieval else ""
        )
        notes.append(
            f"{b['label']}: protocol {b['protocol']}, input {b['input']} (paper: {b['paper_setup']}); "
            f"our seeds: {'; '.join(seeds) or 'no runs yet'}; devices: {', '.join(sorted(devices)) or '-'}"
            f"{semantics}."
        )
    return notes + list(spec.notes)


def _fields(fields: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields.items())


def _cell(ours, paper, decimals: int, bold: bool, is_time: bool, latex: bool) -> str:
    """``91.11 ± 2.78 (91.13)``: ours, its spread over seeds, the paper's number; "–" where either is missing."""
    if is_time:
        return "–" if ours is None else f"{ours[0]:.2f}"
    pm, dash = (r"$\pm$", "--") if latex else ("±", "–")
    if ours is None:
        text = dash
    else:
        mean, std, n = ours
        text = f"{mean:.{decimals}f}"
        text = (r"\textbf{%s}" if latex else "**%s**") % text if bold else text
        text += f" {pm} {std:.{decimals}f}" if n > 1 else ""
    return text if paper is None else f"{text} ({paper:.{decimals}f})"


def render(
    spec: TableSpec,
    fmt: str = "markdown",
    results_dir=None,
    recipe: str | None = None,
    records: list[dict] | None = None,
) -> str:
    if fmt not in FORMATS:
        raise unknown("format", fmt, FORMATS)
    t = build(spec, results_dir, recipe, records)
    latex = fmt == "latex"
    body = [
        [r["label"]]
        + [
            _cell(o, p, spec.decimals, (i, j) in t["best"], c.is_time, latex)
            for j, (c, o, p) in enumerate(zip(t["columns"], r["ours"], r["paper"]))
        ]
        for i, r in enumerate(t["rows"])
    ]
    title = spec.title + (f" (recipe {recipe})" if recipe else "")
    if latex:
        return _latex(title, t, body)
    parts = [f"**{title}**"]
    for block in spec.blocks:  # one table per dataset, or per dataset and metric where that is too wide
        cols = [j for j, c in enumerate(t["columns"]) if c.block is block]
        table = _markdown(body, t["columns"], cols, spec)
        if max(map(len, table.splitlines())) <= TERMINAL_WIDTH or spec.kind == "speed":
            parts.append(f"{block['label']}\n\n{table}")
            continue
        for metric in block["metrics"]:
            mine = [j for j in cols if t["columns"][j].metric == metric]
            parts.append(f"{block['label']}, {metric_label(metric)}\n\n{_markdown(body, t['columns'], mine, spec)}")
    parts.append("\n".join(f"- {n}" for n in t["notes"]))
    return "\n\n".join(parts) + "\n"


def _markdown(body, columns, cols, spec) -> str:
    header = ["Method"] + [_header(columns[j], spec) for j in cols]
    return tabulate(
        [[line[0]] + [line[j + 1] for j in cols] for line in body],
        headers=header,
        tablefmt="github",
        disable_numparse=True,
    )


def _header(c: Column, spec: TableSpec) -> str:
    if c.is_time or len(spec.bits) == 1:
        return metric_label(c.metric) + ("" if c.is_time else f" ({c.bits} bits)")
    return f"{metric_label(c.metric)} {c.bits}"


def _spans(labels):
    """Runs of equal consecutive labels: [(label, length)]."""
    spans = []
    for label in labels:
        if spans and spans[-1][0] == label:
            spans[-1][1] += 1
        else:
            spans.append([label, 1])
    return spans


def _latex(title: str, t: dict, body) -> str:
    """booktabs, with the paper's header groups: dataset, then metric, then code length."""
    columns = t["columns"]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\caption{%s}" % _tex(title),
        r"\begin{tabular}{l" + "c" * len(columns) + "}",
        r"\toprule",
    ]
    blocks = _spans([c.block["label"] for c in columns])
    groups = _spans([(c.block["label"], metric_label(c.metric)) for c in columns])
    lines.append(" & " + " & ".join(r"\multicolumn{%d}{c}{%s}" % (n, _tex(label)) for label, n in blocks) + r" \\")
    rules, start = [], 2
    for _, n in groups:
        rules.append(r"\cmidrule(lr){%d-%d}" % (start, start + n - 1))
        start += n
    lines.append(" & " + " & ".join(r"\multicolumn{%d}{c}{%s}" % (n, _tex(label[1])) for label, n in groups) + r" \\")
    lines.append(" ".join(rules))
    lines.append("Method & " + " & ".join("" if c.is_time else str(c.bits) for c in columns) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join([_tex(line[0])] + line[1:]) + r" \\" for line in body]
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        r"\par\smallskip\parbox{\linewidth}{\footnotesize " + " ".join(_tex(n) for n in t["notes"]) + "}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("±", r"$\pm$"),
        ("<=", r"$\leq$"),
        ("–", "--"),
    ):
        text = text.replace(a, b)
    return text
