"""``bench report``: a static HTML site of every table, figure and run, built from the stored records.

The site opens from ``file://`` with no network: plotly's JavaScript is copied out of its Python package once
(``assets/plotly.min.js``) and every figure is a JSON spec drawn by it. Pages:
- ``index.html``: the tables with their completeness (the cells ``bench reproduce`` enumerates), the protocols,
  the methods and the dates of the records;
- ``tables/NAME.html``: a table in the paper's layout (``bench.tables.build``), ours beside the paper's number and
  their difference, each cell linking to its runs; the same table as ``NAME.md``, ``NAME.tex`` and ``NAME.csv``;
- ``protocols/NAME.html``: a sortable leaderboard (method and config x code length) and the interactive figures;
- ``runs/RUN_ID.html``: one run's config (against its method's default), metrics, environment, timings, metric
  semantics and training curves; ``runs.html`` lists them all;
- ``missing.html``: per table, the cells without a record and the command that fills them.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import statistics
import time
from collections import defaultdict
from functools import cache
from pathlib import Path

from bench import recipes
from bench.registry import get_registry
from bench.reproduce import needed
from bench.results import default_results_dir, read_records
from bench.tables import build, committed_renders, metric_label, render

COMPLETENESS_SEEDS = (0,)  # what `bench reproduce NAME` runs by default
CURVE_METRICS = ("map", "p@h<=2")  # drawn against the code length
LEADERBOARD_METRICS = ("map", "map@", "p@h<=2", "nmi", "acc")  # in this order; "map@" stands for every map@K
TIMINGS = ("fit_s", "encode_s")
LEGEND_WIDTH = 48  # characters of a legend entry; the hover shows the whole config label
DIFF_SATURATION = 10.0  # a difference of this many points (the table's scale) or more gets the strongest colour

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 110em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.45em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td[data-sort] { text-align: right; }
th[colspan] { text-align: center; }
th[data-col] { cursor: pointer; }
th[data-col]:hover { background: #e0e8f5; }
.ours { font-weight: 600; }
.best { text-decoration: underline; }
.paper, .runs, .muted { color: #777; font-size: 0.85em; }
.diff { font-size: 0.85em; padding: 0 0.2em; border-radius: 3px; }
.figure { width: 100%; max-width: 75em; height: 30em; }
.notes li { margin-bottom: 0.3em; font-size: 0.85em; }
.changed { background: #fff3c4; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""

# Sorts a table by the clicked header's column (th data-col): numbers by value (td data-sort), text otherwise,
# empty cells last; a second click reverses.
SORT_JS = """
document.querySelectorAll("th[data-col]").forEach(th => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], col = +th.dataset.col;
  const ascending = th.dataset.dir !== "asc";
  th.dataset.dir = ascending ? "asc" : "desc";
  const key = tr => {
    const td = tr.children[col], v = td.dataset.sort ?? td.textContent.trim();
    return v === "" ? null : (isNaN(+v) ? v : +v);
  };
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return ascending ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}));
"""

esc = html.escape


def build_site(out_dir, results_dir=None, tables=None, seeds=COMPLETENESS_SEEDS) -> dict:
    """Write the site into ``out_dir`` from the records under ``results_dir`` (default: the results folder),
    for ``tables`` (default: every registered table), completeness counted at ``seeds``. Returns {"pages",
    "files", "bytes", "index", "seconds"}."""
    start = time.perf_counter()
    out = Path(out_dir)
    results_dir = Path(results_dir or default_results_dir())
    registry = get_registry()
    tables = list(registry.tables.values()) if tables is None else list(tables)
    records = sorted(read_records(results_dir), key=lambda r: r["created"])
    site = Site(out, records, tables)
    site.write("assets/style.css", CSS)
    site.write("assets/sort.js", SORT_JS)
    _write_plotly(out / "assets" / "plotly.min.js")
    site.written.append(out / "assets" / "plotly.min.js")
    renders = [
        Render(spec, recipe, stem, tuple(seeds), needed(spec, results_dir, recipe, seeds=seeds))
        for spec, recipe, stem in committed_renders(tables)
    ]
    for r in renders:
        site.table_page(r)
    protocols = sorted({r["protocol"] for r in records})
    for protocol in protocols:
        site.protocol_page(protocol, [r for r in records if r["protocol"] == protocol])
    for r in records:
        site.run_page(r)
    site.runs_page()
    site.missing_page(renders, seeds)
    site.index_page(renders, protocols, seeds)
    files = site.written
    return {
        "pages": sum(p.suffix == ".html" for p in files),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "index": str(out / "index.html"),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _write_plotly(path: Path) -> None:
    from plotly.offline import get_plotlyjs

    if not path.exists():  # 4.8 MB, the same for every build with this plotly
        _write(path, get_plotlyjs())


def _mean(values):
    return statistics.fmean(values) if values else None


def _std(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(value, decimals=2) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def _num(value) -> str:
    """A td's sort key: the number, or empty (sorted last)."""
    return "" if value is None else f"{value:.6g}"


def _config_table(config: dict, default: dict | None) -> str:
    keys = list(config) + [k for k in (default or {}) if k not in config]
    rows = []
    for k in keys:
        mine, theirs = config.get(k, "–"), (default or {}).get(k, "–")
        changed = default is not None and mine != theirs
        rows.append(
            f"<tr{' class=changed' if changed else ''}><td>{esc(k)}</td><td>{esc(json.dumps(mine))}</td>"
            f"<td>{esc(json.dumps(theirs)) if default is not None else ''}</td></tr>"
        )
    return (
        "<table id=config><thead><tr><th>field</th><th>this run</th><th>method default</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _pairs(d: dict, table_id: str = "") -> str:
    body = "".join(
        f"<tr><td>{esc(str(k))}</td><td>{esc(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in d.items()
    )
    return f"<table{f' id={table_id}' if table_id else ''}><tbody>{body}</tbody></table>"


def _diff_style(diff: float) -> str:
    """Green when ours is above the paper, red when below, deeper the larger the gap."""
    strength = min(abs(diff) / DIFF_SATURATION, 1.0)
    hue = 120 if diff >= 0 else 0
    return f"background: hsl({hue}, 70%, {95 - 40 * strength:.0f}%)"


def _sortable_header(labels: list[str]) -> str:
    return "<tr>" + "".join(f"<th data-col={i}>{esc(label)}</th>" for i, label in enumerate(labels)) + "</tr>"


def _figure(div_id: str, traces: list[dict], title: str, x_title: str, y_title: str, xaxis=None) -> str:
    """A plotly figure drawn where it stands; the legend, beside the plot, toggles its traces."""
    layout = {
        "title": {"text": title},
        "xaxis": {"title": {"text": x_title}, **(xaxis or {})},
        "yaxis": {"title": {"text": y_title}},
        "margin": {"t": 40},
        "legend": {"font": {"size": 10}},
    }
    spec = json.dumps({"data": traces, "layout": layout}, separators=(",", ":"))
    return (
        f"<div class=figure id={div_id}></div><script>(function(){{const f={spec};"
        f"Plotly.newPlot({json.dumps(div_id)},f.data,f.layout,{{responsive:true}});}})();</script>"
    )


@dataclasses.dataclass
class Render:
    """One table page: a table, at its rows' own recipes or under a table-wide recipe, and the cells it needs."""

    spec: object
    recipe: str | None
    stem: str
    seeds: tuple  # the seeds its completeness counts
    cells: list

    @property
    def title(self) -> str:
        return self.spec.title + (f" (recipe {self.recipe})" if self.recipe else "")

    @property
    def command(self) -> str:
        """The command that runs every missing cell of this page."""
        return f"bench reproduce {self.spec.name}" + (f" --recipe {self.recipe}" if self.recipe else "")

    @property
    def stored(self) -> int:
        return sum(e.stored for e in self.cells)


class Site:
    """The pages of one build: where each goes, how they link, and the labels of the configs they show."""

    def __init__(self, out: Path, records: list[dict], tables: list):
        self.out = out
        self.records = records
        self.tables = tables
        self.registry = get_registry()
        self.labels = {}  # (method, bits) -> {config hash: label}
        self.written: list[Path] = []  # this build's files (the folder may hold an older build's too)

    def page(self, rel: str, title: str, body: str, figures: bool = False) -> None:
        """One HTML page at ``rel`` (relative to the site), linking the shared assets relative to itself."""
        up = "../" * rel.count("/")
        scripts = f'<script src="{up}assets/plotly.min.js"></script>' if figures else ""
        nav = (
            f'<nav><a href="{up}index.html">Index</a><a href="{up}runs.html">Runs</a>'
            f'<a href="{up}missing.html">Missing</a></nav>'
        )
        text = (
            f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f'<link rel=stylesheet href="{up}assets/style.css">{scripts}</head><body>{nav}<h1>{esc(title)}</h1>'
            f'{body}<script src="{up}assets/sort.js"></script></body></html>'
        )
        self.write(rel, text)

    def write(self, rel: str, text: str) -> None:
        _write(self.out / rel, text)
        self.written.append(self.out / rel)

    def run_link(self, r: dict, up: str, text: str | None = None) -> str:
        label = text or f"s{r['seed']}"
        return f'<a href="{up}runs/{r["run_id"]}.html">{esc(label)}</a>'

    # configs

    def config_label(self, r: dict) -> str:
        """The recipe a run's config is (or the table row whose config it is), else how it differs from the
        method's default."""
        key = (r["method"], r["n_bits"])
        if key not in self.labels:
            self.labels[key] = _config_labels(*key, self.tables)
        known = self.labels[key]
        if r["config_hash"] in known:
            return known[r["config_hash"]]
        default = self.default_config(r) or {}
        changed = [f"{k}={json.dumps(v)}" for k, v in r["config"].items() if default.get(k) != v]
        return "default with " + ", ".join(changed) if changed else f"config {r['config_hash'][:6]}"

    def default_config(self, r: dict) -> dict | None:
        cls = self.registry.methods.get(r["method"])
        return None if cls is None else _default_config(cls.name, r["n_bits"])

    # tables

    def table_page(self, render_of: Render) -> None:
        spec, recipe, stem, cells = render_of.spec, render_of.recipe, render_of.stem, render_of.cells
        t = build(spec, recipe=recipe, records=self.records)
        columns = t["columns"]
        head_blocks = "".join(
            f"<th colspan={sum(c.block is b for c in columns)}>{esc(b['label'])}</th>" for b in spec.blocks
        )
        labels = ["Method"] + [f"{metric_label(c.metric)}" + ("" if c.is_time else f" {c.bits}") for c in columns]
        rows = []
        for i, row in enumerate(t["rows"]):
            tds = [f"<td>{esc(row['label'])}</td>"]
            for j, (c, ours, paper) in enumerate(zip(columns, row["ours"], row["paper"])):
                n_bits = row["row"].get("n_bits", c.bits)
                runs = [r for r in row["runs"][c.block["label"]] if r["n_bits"] == n_bits]
                runs.sort(key=lambda r: r["seed"])
                tds.append(self._table_cell(ours, paper, runs, spec.decimals, (i, j) in t["best"]))
            rows.append("<tr>" + "".join(tds) + "</tr>")
        downloads = " ".join(
            f'<a href="{stem}.{ext}">{label}</a>'
            for ext, label in (("md", "markdown"), ("tex", "LaTeX"), ("csv", "CSV"))
        )
        notes = "".join(f"<li id=note{k + 1}>{esc(n)}</li>" for k, n in enumerate(t["notes"]))
        legend = (
            "mean seconds ± std over seeds (n seeds)"
            if spec.kind == "speed"
            else f"ours, mean ± std over seeds (n seeds), the paper's number below, and ours minus the paper's "
            f"(x{spec.scale:g}, green above, red below)"
        )
        body = (
            f"<p>{esc(spec.source)}. Kind: {esc(spec.kind)}. Cells stored: {render_of.stored} / {len(cells)} at "
            f"seed(s) {', '.join(map(str, render_of.seeds))} "
            f'(<a href="../missing.html#{esc(stem)}">missing</a>). Download: {downloads}.</p>'
            f"<p class=muted>Each cell: {legend}; the seed links open the runs. Click a header to sort.</p>"
            f"<table id=paper-table><thead><tr><th></th>{head_blocks}</tr>{_sortable_header(labels)}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table><h2>Notes</h2><ol class=notes>{notes}</ol>"
        )
        self.page(f"tables/{stem}.html", render_of.title, body)
        self.write(f"tables/{stem}.md", render(spec, "markdown", recipe=recipe, records=self.records))
        self.write(f"tables/{stem}.tex", render(spec, "latex", recipe=recipe, records=self.records))
        self.write(f"tables/{stem}.csv", _table_csv(t))

    def _table_cell(self, ours, paper, runs, decimals, best) -> str:
        if ours is None:
            text = "–"
        else:
            mean, std, n = ours
            text = f"<span class='ours{' best' if best else ''}'>{mean:.{decimals}f}</span>"
            text += f" ± {std:.{decimals}f}" if n > 1 else ""
            text += f" <span class=muted>({n})</span>"
        if paper is not None:
            text += f"<br><span class=paper>paper {paper:.{decimals}f}</span>"
            if ours is not None:
                diff = ours[0] - paper
                text += f" <span class=diff style='{_diff_style(diff)}'>{diff:+.{decimals}f}</span>"
        if runs:
            text += "<br><span class=runs>" + " ".join(self.run_link(r, "../") for r in runs) + "</span>"
        return f"<td data-sort='{_num(None if ours is None else ours[0])}'>{text}</td>"

    # protocols

    def protocol_page(self, protocol: str, records: list[dict]) -> None:
        groups = defaultdict(list)  # (method, input, config label, bits) -> records
        for r in records:
            groups[(r["method"], r["input"], self.config_label(r), r["n_bits"])].append(r)
        metrics = _leaderboard_metrics(records)
        published = self._published(protocol)
        labels = ["Method", "input", "config", "bits", "seeds"] + [
            f"{metric_label(m)} (%)" if m.startswith(("map", "p@")) else metric_label(m) for m in metrics
        ]
        labels += ["paper mAP (%)", "fit (s)", "encode (s)", "runs"]
        rows = []
        for (method, view, label, bits), runs in sorted(groups.items()):
            seeds = sorted(r["seed"] for r in runs)
            tds = [method, view, label, str(bits), ", ".join(map(str, seeds))]
            cells = [f"<td>{esc(v)}</td>" for v in tds]
            for m in metrics:
                values = [r["metrics"][m] for r in runs if m in r["metrics"]]
                factor = 100.0 if m.startswith(("map", "p@")) else 1.0
                mean = None if not values else _mean(values) * factor
                std = "" if len(values) < 2 else f" ± {_std(values) * factor:.2f}"
                cells.append(f"<td data-sort='{_num(mean)}'>{_fmt(mean)}{std}</td>")
            paper = published.get((method, runs[0]["config_hash"], bits))
            cells.append(f"<td data-sort='{_num(paper and paper[0])}'>{self._published_cell(paper)}</td>")
            for k in TIMINGS:
                mean = _mean([r["timings"][k] for r in runs if r["timings"].get(k) is not None])
                cells.append(f"<td data-sort='{_num(mean)}'>{_fmt(mean)}</td>")
            cells.append("<td>" + " ".join(self.run_link(r, "../") for r in runs) + "</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        description = records[0].get("protocol_description", "")
        figures = self._figures(protocol, groups)
        body = (
            f"<p>{esc(description)}</p><p class=muted>{len(records)} runs. Means over seeds (± std where more "
            "than one); a row per method, input view, config (its recipe, or the table row whose config it is) "
            "and code length. Paper: the published number for that very config, with its table.</p>"
            f"<h2>Leaderboard</h2><table id=leaderboard><thead>{_sortable_header(labels)}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{figures}"
        )
        self.page(f"protocols/{protocol}.html", f"Protocol {protocol}", body, figures=bool(figures))

    def _published(self, protocol: str) -> dict:
        """(method, config hash, bits) -> (the paper's mAP in %, table name) for every table row on ``protocol``."""
        out = {}
        for spec in self.tables:
            if spec.kind == "speed":
                continue
            for block in spec.blocks:
                if block["protocol"] != protocol:
                    continue
                for row in spec.rows:
                    cls = self.registry.methods.get(row["method"])
                    values = row.get("published", {}).get(protocol, {}).get("map")
                    if cls is None or not values:
                        continue
                    for bits, value in zip(spec.bits, values):
                        n_bits = row.get("n_bits", bits)
                        key = (
                            cls.name,
                            recipes.hash_of(cls, n_bits, row.get("recipe", "default"), row.get("set")),
                            n_bits,
                        )
                        if value is not None:
                            out.setdefault(key, (value * 100.0 / spec.scale, spec.name))
        return out

    @staticmethod
    def _published_cell(paper) -> str:
        if paper is None:
            return ""
        value, table = paper
        return f'{value:.2f} <a class=muted href="../tables/{esc(table)}.html">{esc(table)}</a>'

    def _figures(self, protocol: str, groups: dict) -> str:
        from plotly.colors import qualitative

        retrieval = {k: v for k, v in groups.items() if "pr_radius" in (v[0].get("curves") or {})}
        if not retrieval:
            return ""
        lines = sorted({k[:3] for k in retrieval})
        shown = {line for line in lines if line[2] == recipes.DEFAULT}
        visible = {line: True if line in shown or not shown else "legendonly" for line in lines}
        # a line keeps its colour in every figure; the lines shown at first get the most distinct ones
        ordered = sorted(lines, key=lambda line: visible[line] is not True)
        palette = qualitative.Dark24 + qualitative.Light24
        colour = {line: palette[i % len(palette)] for i, line in enumerate(ordered)}
        bits = sorted({k[3] for k in retrieval})
        parts = [
            "<h2>Figures</h2><p class=muted>Click a legend entry to hide or show a method; configs other "
            "than the default start hidden. Hover for the value, method, recipe and seeds.</p>"
        ]
        for metric in CURVE_METRICS:
            traces = []
            for line in lines:
                points = [(b, retrieval[(*line, b)]) for b in bits if (*line, b) in retrieval]
                points = [(b, [r["metrics"][metric] for r in rs if metric in r["metrics"]], rs) for b, rs in points]
                points = [p for p in points if p[1]]
                if points:
                    traces.append(
                        _trace(
                            line,
                            visible[line],
                            colour[line],
                            [b for b, _, _ in points],
                            [_mean(v) for _, v, _ in points],
                            [p[2] for p in points],
                            error=[_std(v) for _, v, _ in points],
                        )
                    )
            parts.append(
                _figure(
                    f"fig-{_slug(metric)}",
                    traces,
                    f"{metric_label(metric)} against code length",
                    "bits",
                    metric_label(metric),
                    {"type": "log", "tickvals": bits},
                )
            )
        for b in bits:
            for curve, x_key, y_key, x_title in (
                ("pr_radius", "recall", "precision", "recall"),
                ("p@n", "n", "precision", "N"),
            ):
                traces = []
                for line in lines:
                    runs = [r for r in retrieval.get((*line, b), []) if curve in (r.get("curves") or {})]
                    if runs:
                        xs, ys = _mean_curve(runs, curve, x_key, y_key)
                        traces.append(_trace(line, visible[line], colour[line], xs, ys, [runs] * len(xs)))
                title = "precision-recall by Hamming radius" if curve == "pr_radius" else "precision of the top N"
                parts.append(
                    _figure(
                        f"fig-{_slug(curve)}-{b}",
                        traces,
                        f"{title}, {b} bits",
                        x_title,
                        "precision",
                    )
                )
        return "".join(parts)

    # runs

    def run_page(self, r: dict) -> None:
        default = self.default_config(r)
        cls = self.registry.methods.get(r["method"])
        changed = [] if default is None else [k for k in r["config"] if r["config"].get(k) != default.get(k)]
        summary = {
            "method": r["method"],
            "paper": (r.get("method_info") or {}).get("paper", getattr(cls, "paper", "")),
            "config": self.config_label(r),
            "protocol": r["protocol"],
            "input": r["input"],
            "bits": r["n_bits"],
            "seed": r["seed"],
            "created": r["created"],
            "run_id": r["run_id"],
            "config_hash": r["config_hash"],
        }
        diff = (
            "no method default known (the method is not registered)"
            if default is None
            else (f"differs from the method's default in: {', '.join(changed)}" if changed else "the method's default")
        )
        protocol = f'<a href="../protocols/{esc(r["protocol"])}.html">{esc(r["protocol"])}</a>'
        body = (
            f"{_pairs(summary, 'summary')}<p>Protocol page: {protocol}. {esc(r.get('protocol_description', ''))}</p>"
            f"<h2>Config</h2><p>Its config {esc(diff)} (highlighted).</p>{_config_table(r['config'], default)}"
            f"<h2>Metrics</h2>{_pairs(r['metrics'], 'metrics')}<h2>Timings (s)</h2>{_pairs(r['timings'])}"
        )
        training = r.get("training") or {}
        figures = _training_figures(training.get("log") or [])
        if training:
            body += "<h2>Training</h2>" + _pairs({k: v for k, v in training.items() if k != "log"}) + figures
        body += f"<h2>Evaluation</h2>{_pairs(r.get('evaluation') or {})}"
        body += f"<h2>Metric semantics</h2>{_pairs(r.get('semantics') or {})}"
        env = dict(r["environment"])
        packages = env.pop("packages", {})
        body += f"<h2>Environment</h2>{_pairs(env)}{_pairs(packages)}"
        self.page(
            f"runs/{r['run_id']}.html",
            f"Run {r['method']}, {r['protocol']}, {r['n_bits']} bits, seed {r['seed']}",
            body,
            figures=bool(figures),
        )

    def runs_page(self) -> None:
        labels = ["run", "method", "protocol", "input", "bits", "seed", "config", "mAP (%)", "created"]
        rows = []
        for r in self.records:
            value = r["metrics"].get("map")
            value = None if value is None else value * 100
            rows.append(
                f"<tr><td>{self.run_link(r, '', r['run_id'])}</td><td>{esc(r['method'])}</td>"
                f"<td>{esc(r['protocol'])}</td><td>{esc(r['input'])}</td><td>{r['n_bits']}</td><td>{r['seed']}</td>"
                f"<td>{esc(self.config_label(r))}</td><td data-sort='{_num(value)}'>{_fmt(value)}</td>"
                f"<td>{esc(r['created'])}</td></tr>"
            )
        body = (
            f"<p>{len(self.records)} stored runs.</p><table id=runs><thead>{_sortable_header(labels)}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
        self.page("runs.html", "Runs", body)

    # missing, index

    def missing_page(self, renders: list[Render], seeds) -> None:
        parts = [
            f"<p>Per table, the cells at seed(s) {', '.join(map(str, seeds))} without a stored record, and the "
            "command that runs them (<code>bench reproduce NAME</code> runs every missing cell of a table).</p>"
        ]
        for r in renders:
            missing = [e for e in r.cells if not e.stored]
            parts.append(
                f"<h2 id={esc(r.stem)}><a href='tables/{esc(r.stem)}.html'>{esc(r.stem)}</a>: "
                f"{len(missing)} of {len(r.cells)} missing</h2>"
            )
            if not missing:
                continue
            seed_flag = "" if tuple(seeds) == (0,) else " --seeds " + " ".join(map(str, seeds))
            parts.append(f"<p>All: <code>{esc(r.command)}{seed_flag}</code></p>")
            labels = ["row", "protocol", "input", "bits", "seed", "estimate (s)", "command"]
            rows = []
            for e in missing:
                p = e.plan
                command = f"{r.command} --rows '{e.row}' --bits {p.n_bits} --seeds {p.cell.seed}"
                rows.append(
                    f"<tr><td>{esc(e.row)}</td><td>{esc(p.protocol.name)}</td><td>{esc(p.view)}</td>"
                    f"<td>{p.n_bits}</td><td>{p.cell.seed}</td><td data-sort='{_num(e.estimate_s)}'>"
                    f"{_fmt(e.estimate_s, 0)}</td><td><code>{esc(command)}</code></td></tr>"
                )
            parts.append(
                f"<table class=missing><thead>{_sortable_header(labels)}</thead><tbody>{''.join(rows)}</tbody></table>"
            )
        self.page("missing.html", "Missing cells", "".join(parts))

    def index_page(self, renders: list[Render], protocols: list[str], seeds) -> None:
        dates = [r["created"] for r in self.records]
        span = f"{dates[0]} to {dates[-1]}" if dates else "no records yet"
        table_rows = "".join(
            f"<tr><td><a href='tables/{esc(r.stem)}.html'>{esc(r.stem)}</a></td><td>{esc(r.title)}</td>"
            f"<td>{esc(r.spec.kind)}</td><td>{esc(r.recipe or '')}</td>"
            f"<td data-sort='{r.stored / max(len(r.cells), 1):.4f}'>{r.stored} / {len(r.cells)}</td></tr>"
            for r in renders
        )
        by_protocol = defaultdict(list)
        for r in self.records:
            by_protocol[r["protocol"]].append(r)
        protocol_rows = "".join(
            f"<tr><td><a href='protocols/{esc(p)}.html'>{esc(p)}</a></td><td data-sort={len(by_protocol[p])}>"
            f"{len(by_protocol[p])}</td>"
            f"<td>{esc(', '.join(sorted({r['method'] for r in by_protocol[p]})))}</td></tr>"
            for p in protocols
        )
        runs_of = defaultdict(int)
        for r in self.records:
            runs_of[r["method"]] += 1
        method_rows = "".join(
            f"<tr><td>{esc(name)}</td><td>{esc(cls.paper)}</td><td>{esc(cls.supervision)}</td>"
            f"<td>{esc(cls.input)}</td><td data-sort={runs_of[name]}>{runs_of[name]}</td></tr>"
            for name, cls in sorted(self.registry.methods.items())
        )
        seed_text = ", ".join(map(str, seeds))
        body = (
            f"<p>{len(self.records)} stored runs, made {esc(span)}. <a href='runs.html'>All runs</a>, "
            f"<a href='missing.html'>missing cells</a>.</p>"
            f"<h2>Tables</h2><p class=muted>Complete: the cells stored of those the table needs at seed(s) "
            f"{seed_text} (the enumeration of <code>bench reproduce</code>).</p>"
            f"<table id=tables><thead>{_sortable_header(['table', 'title', 'kind', 'recipe', 'cells stored / needed'])}"
            f"</thead><tbody>{table_rows}</tbody></table>"
            f"<h2>Protocols</h2><table id=protocols><thead>{_sortable_header(['protocol', 'runs', 'methods'])}"
            f"</thead><tbody>{protocol_rows}</tbody></table>"
            f"<h2>Methods</h2><table id=methods><thead>"
            f"{_sortable_header(['method', 'paper', 'supervision', 'input', 'runs'])}</thead>"
            f"<tbody>{method_rows}</tbody></table>"
        )
        self.page("index.html", "hashbench results", body)


def _config_labels(method: str, n_bits: int, tables: list) -> dict[str, str]:
    """config hash -> label for ``method`` at ``n_bits``: its recipes first, then the table rows (with their
    ``set``, under each table-wide recipe) that run it."""
    registry = get_registry()
    cls = registry.methods.get(method)
    if cls is None:
        return {}
    labels = {}
    for name in recipes.names(cls):
        labels.setdefault(recipes.hash_of(cls, n_bits, name), name)
    for spec in tables:
        for row in spec.rows:
            if row["method"] != method or row.get("published_only"):
                continue
            for under in (None, *spec.recipes):
                if under is not None and under not in cls.recipes:
                    continue
                key = recipes.hash_of(cls, n_bits, row.get("recipe", recipes.DEFAULT), row.get("set"), under)
                labels.setdefault(key, row["label"] + (f" [{under}]" if under else ""))
    return labels


@cache
def _default_config(method: str, n_bits: int) -> dict:
    return recipes.config_json(recipes.resolve(get_registry().methods[method], n_bits))


def _leaderboard_metrics(records: list[dict]) -> list[str]:
    present = {m for r in records for m in r["metrics"]}
    out = []
    for m in LEADERBOARD_METRICS:
        if m.endswith("@"):
            out += sorted((k for k in present if k.startswith(m)), key=lambda k: int(k[len(m) :]))
        elif m in present:
            out.append(m)
    return out


def _mean_curve(runs: list[dict], curve: str, x_key: str, y_key: str) -> tuple[list, list]:
    """The curve averaged point by point over the runs (their points are at the same radii or N)."""
    curves = [r["curves"][curve] for r in runs]
    length = min(len(c[x_key]) for c in curves)
    return (
        [_mean([c[x_key][i] for c in curves]) for i in range(length)],
        [_mean([c[y_key][i] for c in curves]) for i in range(length)],
    )


def _trace(line: tuple, visible, colour: str, xs: list, ys: list, runs_per_point: list, error=None) -> dict:
    method, view, label = line
    seeds = [", ".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"])) for rs in runs_per_point]
    trace = {
        "type": "scatter",
        "mode": "lines+markers",
        "name": _short(f"{method} ({view}, {label})"),
        "x": xs,
        "y": ys,
        "visible": visible,
        "line": {"color": colour},
        "marker": {"color": colour},
        "customdata": [[f"{method} ({view})", label, s] for s in seeds],
        "hovertemplate": "%{y:.4f} at %{x}<br>method %{customdata[0]}<br>recipe %{customdata[1]}"
        "<br>seeds %{customdata[2]}<extra></extra>",
    }
    if error is not None:
        trace["error_y"] = {"type": "data", "array": error, "visible": True}
    return trace


def _training_figures(log: list[dict]) -> str:
    """The training log drawn against its epoch or iteration: the losses, and the validation mAP apart."""
    if not log:
        return ""
    x_key = "epoch" if "epoch" in log[0] else "iteration" if "iteration" in log[0] else None
    xs = [e.get(x_key, i) for i, e in enumerate(log)] if x_key else list(range(len(log)))
    keys = sorted({k for e in log for k, v in e.items() if k != x_key and isinstance(v, (int, float))})
    parts = []
    for name, chosen in (
        ("losses", [k for k in keys if k != "validation_map"]),
        ("validation mAP", [k for k in keys if k == "validation_map"]),
    ):
        traces = [
            {"type": "scatter", "mode": "lines+markers", "name": k, "x": xs, "y": [e.get(k) for e in log]}
            for k in chosen
        ]
        if traces:
            parts.append(
                _figure(
                    f"training-{_slug(name)}",
                    traces,
                    f"training {name}",
                    x_key or "log entry",
                    name,
                )
            )
    return "".join(parts)


def _short(text: str, width: int = LEGEND_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)


def _table_csv(t: dict) -> str:
    """The table long: a line per (row, column) with ours, its spread and seed count, and the paper's number."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "block", "protocol", "metric", "bits", "ours_mean", "ours_std", "seeds", "paper"])
    for row in t["rows"]:
        for c, ours, paper in zip(t["columns"], row["ours"], row["paper"]):
            mean, std, n = ours if ours is not None else (None, None, 0)
            writer.writerow(
                [
                    row["label"],
                    c.block["label"],
                    c.block["protocol"],
                    c.metric,
                    row["row"].get("n_bits", c.bits),
                    _num(mean),
                    _num(std),
                    n,
                    _num(paper),
                ]
            )
    return buffer.getvalue()
