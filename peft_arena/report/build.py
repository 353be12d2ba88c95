"""Turn the records of a results folder into tables, a markdown leaderboard, an HTML page and
charts.

A report only reads records (it never re-runs anything), so it can be rebuilt at any time,
on any machine that has the results folder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.table import Table

from peft_arena.common.errors import UserError
from peft_arena.report import breakdown, hardware, markdown, ranks, stats, tuning
from peft_arena.report.markdown import DASH, number
from peft_arena.report.results import (
    CellDetail,
    labelled,
    load_results,
    sort_summary,
    summarise,
)
from peft_arena.report.views import charts, explorer, html_page, kinds, plane

LEGEND = (
    "**Bold** = best in its column within the task (highest accuracy, F1 and throughput; "
    "lowest parameters, memory and time) · ± = sample sd over seeds · — = not recorded."
)
MEMORY_NOTE = (
    "Peak memory is the CPU RSS of the cell's own process on CPU runs, or GPU memory read "
    "through NVML on GPU runs, so CPU and GPU numbers are not comparable."
)
# Significance columns in the summary, from stats.SIGNIFICANCE_COLUMNS.
SIGNIFICANCE_RENAME = {"verdict": "vs_best", "test": "vs_best_test", "p_value": "vs_best_p",
                       "diff": "vs_best_diff", "ci_low": "vs_best_ci_low",
                       "ci_high": "vs_best_ci_high", "note": "vs_best_note"}


@dataclass
class ReportResult:
    summary: pd.DataFrame
    frame: pd.DataFrame
    paths: list[Path]
    provenance: str


# --- formatting -------------------------------------------------------------------------------


def human_count(n: float) -> str:
    """148224 -> '148.2K', 22713216 -> '22.7M'."""
    if not math.isfinite(n):
        return DASH
    if abs(n) < 1000:
        return f"{n:.0f}"
    for unit, scale in (("K", 1e3), ("M", 1e6)):
        # Check after rounding, so 999_960 reads 1.0M and not 1000.0K.
        if round(abs(n) / scale, 1) < 1000:
            return f"{n / scale:.1f}{unit}"
    return f"{n / 1e9:.1f}B"


def _pct(value: float) -> str:
    return f"{value:.3g}%"


def _share(value: float) -> str:
    return f"{value:.1%}"


def _signed_pct(value: float) -> str:
    return f"{value:+.0%}"


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:,.{digits}f}"


def _seeds_text(row: pd.Series) -> str:
    if not row["n_failed"]:
        return str(row["n_seeds"])
    if not row["n_seeds"]:
        return f"{row['n_failed']} failed"
    error = f": {row['error_type']}" if isinstance(row["error_type"], str) else ""
    return f"{row['n_seeds']} (+{row['n_failed']} failed{error})"


def _spread(row: pd.Series, name: str, digits: int) -> str:
    std = row[f"{name}_std"]
    return f" ± {std:.{digits}f}" if row["n_seeds"] > 1 and math.isfinite(std) else ""


def _p_text(p_value: float) -> str:
    return "p<0.001" if p_value < 0.001 else f"p={p_value:.3f}"


def _points(fraction: float) -> str:
    return f"{100 * fraction:+.1f}".replace("-", "−")


def vs_best_text(row: pd.Series) -> str:
    """The significance cell: the verdict and the test behind it."""
    verdict = row.get("vs_best")
    if not isinstance(verdict, str) or row["n_seeds"] == 0:
        return DASH
    if verdict in (stats.BEST, stats.UNTESTED):
        return verdict
    word = "≈" if verdict == stats.SAME else "worse"
    if row.get("vs_best_test") == stats.WELCH:
        return f"{word} (t-test {_p_text(row['vs_best_p'])})"
    return (f"{word} (bootstrap {_points(row['vs_best_diff'])} pts "
            f"[{_points(row['vs_best_ci_low'])}, {_points(row['vs_best_ci_high'])}])")


@dataclass(frozen=True)
class _Column:
    header: str
    key: str  # summary column holding the value that decides "best"
    fmt: Callable[[float], str]
    meaning: str  # one line for the "Columns" list
    best: str | None = None  # "max" or "min"
    spread: str | None = None  # summary metric whose std is appended when n_seeds > 1
    optional: bool = False  # shown only when some record has the value


_COLUMNS = (
    _Column("accuracy", "accuracy_mean", _fixed(3),
            "on the test split; mean ± sample sd over seeds when more than one.", "max",
            "accuracy"),
    _Column("macro F1", "macro_f1_mean", _fixed(3),
            "F1 averaged over classes with equal weight, so neglected rare classes show.",
            "max", "macro_f1"),
    _Column("invalid", "invalid_share_mean", _share, "generation: share of test answers that "
            "name no label (counted wrong).", "min", optional=True),
    _Column("zero-shot", "zero_shot_accuracy_mean", _fixed(3), "generation: the untuned "
            "model's accuracy on the same test split.", None, optional=True),
    _Column("trainable params", "trainable", human_count,
            "parameters the strategy trains (a 4-bit base counted unquantized).", "min"),
    _Column("trainable %", "trainable_pct", _pct,
            "trainable parameters as a share of all the model's parameters.", "min"),
    _Column("peak MiB", "peak_mb_mean", _fixed(0), f"mean peak memory. {MEMORY_NOTE}", "min"),
    _Column("p99 MiB", "memory_p99_mean", _fixed(0),
            "99th percentile of the memory sampled through the cell (same source as peak; "
            "mean, max and per phase in the record's memory.timeline).", "min", optional=True),
    _Column("weights MiB", "weights_mb_mean", _fixed(0),
            "memory the model's weights take as stored (a 4-bit base at its packed size).",
            "min", optional=True),
    _Column("est. MiB", "estimate_mb_mean", _fixed(0),
            "the dry run's estimate of the training tensors: weights, gradients, AdamW states "
            "and activations (peft_arena/train/memory_estimate.py).", None, optional=True),
    _Column("est. error", "estimate_error_mean", _signed_pct,
            "the estimate's error against torch's peak allocated GPU memory (GPU records only;"
            " on CPU the peak resident memory is mostly the interpreter and its libraries).",
            None, optional=True),
    _Column("est. error CPU", "estimate_error_cpu_mean", _signed_pct,
            "the estimate's error against the peak resident memory above the cell's baseline "
            "after setup (CPU records; the rise also holds the data, the tokenizer and the "
            "model file's pages while it loads: measure/estimate_check.py).",
            None, optional=True),
    _Column("est. error in use", "estimate_error_in_use_mean", _signed_pct,
            "the estimate's error against the memory in use above the cell's baseline: the "
            "resident rise less the C allocator's free blocks, which stay resident after "
            "activations are freed (CPU records since the in-use sample: "
            "measure/estimate_check.py).", None, optional=True),
    _Column("train s", "train_s_mean", _fixed(1),
            "mean wall-clock seconds of the training phase (every phase: see Details).",
            "min"),
    _Column("samples/s", "throughput_mean", _fixed(1),
            "training examples processed per second of the training phase.", "max"),
    _Column("tokens/s", "tokens_per_s_mean", _fixed(0),
            "non-padding training tokens per second of the training phase.", "max",
            optional=True),
    _Column("decode tok/s", "decode_tokens_per_s_mean", _fixed(0), "generation: tokens/s of "
            "the test split's batched greedy decoding.", "max", optional=True),
    _Column("MFU", "mfu_mean", _share,
            "model FLOPs utilisation: achieved training FLOP/s over the hardware's peak.", "max",
            optional=True),
    _Column("of ceiling", "ceiling_share_mean", _share,
            "achieved training FLOP/s over the matmul rate this machine reaches at the "
            "model's own shapes (record compute.model_gemm_flops_per_s): how far the cell is "
            "from what its matmuls allow here.", "max", optional=True),
    _Column("CKA", "cka_mean", _fixed(3),
            "linear CKA between the base and the tuned model's pooled final hidden states on "
            "general probe texts of the other tasks; 1 = representation unchanged.", "max",
            "cka", optional=True),
    _Column("probe Δ", "transfer_delta_mean", _points,
            "transfer retention: accuracy points a linear probe on the tuned model's frozen "
            "features of another task gains (+) or loses (−) against the same probe on the "
            "base model.", "max", optional=True),
    _Column("ppl ratio", "perplexity_ratio_mean", _fixed(3),
            "decoders: perplexity of the tuned body through the base LM head over the base "
            "model's, on the probe texts; 1 = unchanged, above 1 = forgot.", "min",
            optional=True),
    _Column("ΔW norm", "update_norm_mean", lambda v: f"{100 * v:.2g}%",
            "size of the weight update: ||ΔW|| over ||W|| of the changed linear weights.",
            None, optional=True),
    _Column("ΔW rank", "update_rank_mean", _fixed(1),
            "effective rank of the weight update (exp of the entropy of its singular values), "
            "mean over changed modules.", None, optional=True),
    _Column("intruders", "intruders_mean", _fixed(1),
            "intruder dimensions over the model: top-10 singular vectors of W + ΔW with no "
            "cosine of 0.5 or more to any singular vector of W (Shuttleworth et al., 2024).",
            None, optional=True),
)
_VS_BEST_AFTER = "macro F1"  # the significance column follows this one


def _shown_columns(summary: pd.DataFrame) -> list[_Column]:
    return [c for c in _COLUMNS
            if not c.optional or (c.key in summary and summary[c.key].notna().any())]


def _values(table: pd.DataFrame, column: _Column) -> list[float]:
    # Failed rows have no value to compete with (and must never win "lowest time").
    values = table[column.key] if column.key in table else pd.Series(math.nan, table.index)
    return [
        float(v) if n > 0 and pd.notna(v) else math.nan
        for v, n in zip(values, table["n_seeds"], strict=True)
    ]


def _best_text(values: list[float], column: _Column) -> str | None:
    """The formatted best value, or None when there is nothing to compare."""
    finite = [v for v in values if math.isfinite(v)]
    # All equal (say, one base model's total params) or a single row: no winner to point at.
    if column.best is None or len({column.fmt(v) for v in finite}) < 2:
        return None
    return column.fmt(max(finite) if column.best == "max" else min(finite))


def _column_cells(table: pd.DataFrame, column: _Column) -> list[str]:
    values = _values(table, column)
    best = _best_text(values, column)
    cells = []
    for value, (_, row) in zip(values, table.iterrows(), strict=True):
        if not math.isfinite(value):
            cells.append(DASH)
            continue
        text = column.fmt(value)
        # Ties on the shown value are all bold: the reader cannot tell them apart either.
        bold = text == best
        text += _spread(row, column.spread, 3) if column.spread else ""
        cells.append(f"**{text}**" if bold else text)
    return cells


def _failed_text(row: pd.Series) -> str:
    error = row["error_type"] if isinstance(row["error_type"], str) else "error"
    return f"failed ({error})"


# The compact table a pull request can hold with fifty methods: at most ten columns.
COMPACT_HEADERS = ("accuracy", "trainable params", "peak MiB", "train s", "CKA")


def _compact_columns(columns: list[_Column]) -> list[_Column]:
    return [c for c in columns if c.header in COMPACT_HEADERS]


def _has_ranks(table: pd.DataFrame) -> bool:
    return "rank" in table and table["rank"].notna().any()


def _markdown_table(table: pd.DataFrame, columns: list[_Column], compact: bool = False) -> str:
    """A task's table: every shown column, or (compact) accuracy, the rank with its interval
    and tier, and the main costs."""
    table = sort_summary(table)
    headers, cells = ["strategy", "kind"], []
    for column in columns:
        headers.append(column.header)
        cells.append(_column_cells(table, column))
        if column.header == _VS_BEST_AFTER and not compact:
            headers.append("vs best")
            cells.append([vs_best_text(row) for _, row in table.iterrows()])
        if column.header == "accuracy" and compact and _has_ranks(table):
            headers += ["rank (95%)", "tier"]
            cells.append([ranks.rank_text(row) for _, row in table.iterrows()])
            cells.append([DASH if pd.isna(row.get("tier")) else str(int(row["tier"]))
                          for _, row in table.iterrows()])
    headers.append("seeds")
    rows = []
    for i, (_, row) in enumerate(table.iterrows()):
        row_cells = [column[i] for column in cells]
        if row["n_seeds"] == 0:
            row_cells[0] = _failed_text(row)  # never a 0: a failed cell has no score
        rows.append([row["strategy"], kind_text(row), *row_cells, _seeds_text(row)])
    return "\n".join(markdown.table(headers, rows))


def kind_text(row: pd.Series) -> str:
    """A row's task kind; frames made before generation tasks existed are classification."""
    kind = row.get("kind")
    return kind if isinstance(kind, str) else "classification"


def _columns_list(columns: list[_Column]) -> list[str]:
    lines = ["**Columns**", "", "- **kind**: classification (a head) or generation (the answer "
             "written by the model after a prompt)."]
    for column in columns:
        lines.append(f"- **{column.header}**: {column.meaning}")
        if column.header == _VS_BEST_AFTER:
            lines.append(f"- **vs best**: {stats.EXPLANATION.removeprefix('vs best: ')}")
    lines.append(f"- **rank (95%)** and **tier** (compact tables): "
                 f"{ranks.EXPLANATION.removeprefix('rank: ')}")
    lines.append("- **seeds**: successful seeds (failed ones noted with their error).")
    return [*lines, ""]


def _relative(path: Path | str, base: Path | None) -> str:
    path = Path(path)
    if base is not None:
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            pass
    return f"{charts.CHARTS_SUBDIR}/{path.name}"


def _chart_links(chart_paths: Sequence[Path | str] | None, base: Path | None,
                 images: bool) -> list[str]:
    if chart_paths is None:
        chart_paths = [Path(f"{c.name}.png") for c in (*charts.CHARTS, *charts.TRADEOFFS)]
    if not chart_paths:
        return []
    entries = [(charts.chart_title(Path(p).stem), _relative(p, base)) for p in chart_paths]
    if images:
        return ["## Charts", "", *(f"![{title}]({link})\n" for title, link in entries)]
    return ["## Charts", "", *(f"- [{title}]({link})" for title, link in entries), ""]


def leaderboard_markdown(
    summary: pd.DataFrame,
    provenance_line: str,
    chart_paths: Sequence[Path | str] | None = None,
    *,
    details: dict[str, list[str]] | None = None,
    base: Path | None = None,
    images: bool = False,
    notes: dict[str, list[str]] | None = None,
    hardware_lines: dict[str, list[str]] | None = None,
    mixed_hardware: bool = False,
    stability: dict[str, ranks.Stability] | None = None,
) -> str:
    """A markdown leaderboard: one table per task, what the columns mean, the charts, then
    per-task detail.

    chart_paths: the charts to link, relative to `base` (the report folder); None links the
    standard charts under charts/. details: markdown lines per task (breakdown.task_section).
    images: show the charts inline rather than as a list of links (a PR comment cannot show
    images that live in a CI run's files, but a link list still reads well). notes: markdown
    lines shown under a task's table (breakdown.leak_note).
    hardware_lines: markdown per task on records from other hardware (hardware.py).
    mixed_hardware: the records come from more than one kind of hardware (say how costs are
    kept apart). stability: per task, how stable the order is across seeds (ranks.py).

    Each task opens with a compact table (at most ten columns, with the rank intervals when
    the summary has them: with_ranks), the full table folded below it.
    """
    columns = _shown_columns(summary)
    parts = ["# peft-arena leaderboard", "", provenance_line, "", LEGEND, ""]
    if mixed_hardware:
        parts += [hardware.NOTE, ""]
    for task, table in summary.groupby("task", sort=True):
        parts += [f"## {markdown.escape(task)}", "",
                  _markdown_table(table, _compact_columns(columns), compact=True), ""]
        if stability is not None and str(task) in stability:
            parts += [stability[str(task)].text(), ""]
        # GitHub renders a markdown table inside <details> only after a blank line.
        parts += ["<details><summary>All columns</summary>", "",
                  _markdown_table(table, columns), "", "</details>", "",
                  *(notes or {}).get(str(task), [])]
        parts += (hardware_lines or {}).get(str(task), [])
    parts += _columns_list(columns)
    parts += _chart_links(chart_paths, base, images)
    sections = [lines for _, lines in sorted((details or {}).items()) if lines]
    if sections:
        parts += ["## Details", ""]
        for lines in sections:
            parts += lines
    return "\n".join(parts).rstrip() + "\n"


# --- provenance and terminal table ------------------------------------------------------------


def _distinct(values: pd.Series) -> str | None:
    unique = sorted({str(v) for v in values.dropna()})
    return ", ".join(unique) or None


def _short_commit(commit: str) -> str:
    # A full 40-hex hash is noise in a one-line header; keep a suffix such as "-dirty".
    return re.sub(r"\b([0-9a-f]{10})[0-9a-f]{30}\b", r"\1", commit)


def _dirty_text(frame: pd.DataFrame) -> str:
    """Whether the checkout had uncommitted changes (results/ aside) when records were made:
    a commit alone does not say what code produced them then."""
    flags = frame["git_dirty"].dropna() if "git_dirty" in frame else pd.Series(dtype=float)
    if flags.empty:
        return " (tree state not recorded)"
    dirty = int((flags > 0).sum())
    if dirty == 0:
        return " (clean tree)"
    return f" (uncommitted changes in the tree for {dirty} of {len(flags)} records)"


def provenance_line(frame: pd.DataFrame) -> str:
    """One line saying what produced the numbers: model, precision, hardware, commit."""
    fields = [("model", "model"), ("precision", "precision"), ("CPU", "cpu"), ("GPU", "gpu"),
              ("hardware", "hardware")]
    parts = [f"{label}: {text}" for label, col in fields if (text := _distinct(frame[col]))]
    if "model_source" in frame and (sources := _distinct(frame["model_source"])):
        # config.gguf_source: a quantized file's rounding of the weights, not the original.
        parts.append(f"weights: {sources} (not the original bf16 checkpoint)")
    if commit := _distinct(frame["git_commit"]):
        parts.append(f"git commit: {_short_commit(commit)}{_dirty_text(frame)}")
    n_failed = int((frame["status"] != "ok").sum())
    parts.append(f"{len(frame)} records ({n_failed} failed)")
    return "Provenance: " + " · ".join(parts)


_STATUS_STYLE = {"ok": "green", "partial": "yellow", "failed": "red"}


def rich_table(summary: pd.DataFrame) -> Table:
    """The summary as a terminal table (metrics are means over successful seeds)."""
    table = Table(title="peft-arena results", show_lines=False)
    for name in ("task", "kind", "strategy"):
        table.add_column(name)
    for name in ("accuracy", "macro F1", "vs best", "trainable", "%", "train s", "peak MiB",
                 "seeds"):
        table.add_column(name, justify="right")
    table.add_column("status")
    for _, row in summary.iterrows():
        accuracy = number(row["accuracy_mean"], _fixed(3)) + _spread(row, "accuracy", 3)
        style = _STATUS_STYLE.get(row["status"], "")
        status = row["status"] if row["n_seeds"] else _failed_text(row)
        table.add_row(
            str(row["task"]), kind_text(row), str(row["strategy"]), accuracy,
            number(row["macro_f1_mean"], _fixed(3)), vs_best_text(row),
            number(row["trainable"], human_count), number(row["trainable_pct"], _pct),
            number(row["train_s_mean"], _fixed(1)), number(row["peak_mb_mean"], _fixed(0)),
            _seeds_text(row), f"[{style}]{status}[/]" if style else status,
        )
    return table


# --- the report -------------------------------------------------------------------------------


def with_significance(summary: pd.DataFrame, frame: pd.DataFrame,
                      details: dict[str, CellDetail]) -> pd.DataFrame:
    """The summary with the vs-best verdict of every row (see stats.significance)."""
    verdicts = stats.significance(labelled(frame), details).rename(columns=SIGNIFICANCE_RENAME)
    merged = summary.merge(verdicts, how="left", on=["task", "strategy"])
    return sort_summary(merged)


def with_ranks(summary: pd.DataFrame, frame: pd.DataFrame,
               details: dict[str, CellDetail]) -> pd.DataFrame:
    """The summary with each row's rank, its 95% interval and its tier (see ranks.py)."""
    found = ranks.rank_intervals(labelled(frame), details)
    summary = summary.drop(columns=[c for c in ranks.RANK_COLUMNS[2:] if c in summary])
    return sort_summary(summary.merge(found, how="left", on=["task", "strategy"]))


def build_report(results_dir: Path, out_dir: Path | None = None, confusion: bool = False,
                 chart_links: bool = True) -> ReportResult:
    """Write leaderboard.md, report.html, results.csv, summary.csv and charts/*.png (and
    charts/confusion/*.png with `confusion`) into out_dir (default: the results folder).

    chart_links: list the charts in leaderboard.md (report.html always embeds them).
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    results = load_results(results_dir)
    frame = results.frame
    if frame.empty:
        raise UserError(
            f"No records in {results_dir}: run `peft-arena run` first or pass --results."
        )
    summary = with_significance(summarise(frame), frame, results.details)
    summary = with_ranks(summary, frame, results.details)
    provenance = provenance_line(frame)
    out_dir.mkdir(parents=True, exist_ok=True)
    with_labels = labelled(frame)
    # Labels come from the whole frame, so charts and tables agree on which configs differ.
    chart_paths = charts.write_charts(hardware.costs_on_reference(with_labels),
                                      out_dir / charts.CHARTS_SUBDIR, hue="label",
                                      details=results.details, confusion=confusion)
    # Retention is not a cost: drawn from every record, whatever its hardware.
    chart_paths += plane.write_plane(with_labels, out_dir / charts.CHARTS_SUBDIR, hue="label")
    # Each way's times from its own records; the chart says when their hardware differs.
    chart_paths += kinds.write_head_vs_generation(with_labels, out_dir / charts.CHARTS_SUBDIR)
    details = {
        str(task): breakdown.task_section(str(task), with_labels, table, results.details)
        for task, table in summary.groupby("task", sort=True)
    }
    ok = with_labels[with_labels["status"] == "ok"]
    searched = tuning.default_against_tuned(with_labels)
    both_ways = kinds.comparison_lines(with_labels)
    notes = {str(task): [*tuning.task_lines(str(task), searched),
                         *breakdown.leak_note(ok[ok["task"] == task], results.details),
                         *both_ways.get(str(task), [])]
             for task in summary["task"].unique()}
    on_hardware = {str(task): hardware.task_hardware_lines(str(task), with_labels)
                   for task in summary["task"].unique()}
    mixed = hardware.is_mixed(frame)
    stability = ranks.stability_by_task(with_labels)
    markdown = leaderboard_markdown(summary, provenance, chart_paths if chart_links else [],
                                    details=details, base=out_dir, notes=notes,
                                    hardware_lines=on_hardware, mixed_hardware=mixed,
                                    stability=stability)
    (out_dir / "leaderboard.md").write_text(markdown, encoding="utf-8")
    with_images = leaderboard_markdown(summary, provenance, chart_paths, details=details,
                                       base=out_dir, images=True, notes=notes,
                                       hardware_lines=on_hardware, mixed_hardware=mixed,
                                       stability=stability)
    page = html_page.render_page(with_images, out_dir, title="peft-arena leaderboard",
                                 explorer=explorer.explorer_html(explorer.build_payload(
                                     with_labels, summary, results.details,
                                     results_dir=results_dir, report_dir=out_dir)))
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    frame.to_csv(out_dir / "results.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    written = [out_dir / n for n in ("leaderboard.md", "report.html", "results.csv",
                                     "summary.csv")]
    return ReportResult(summary, frame, [*written, *chart_paths], provenance)
