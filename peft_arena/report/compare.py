"""Compare two results folders cell by cell (task x strategy): what got better, what got worse,
and which changes are regressions beyond the tolerated thresholds.

Typical use is a pull request: BASE holds the records of the target branch, HEAD those of the
change, both run the same way on the same machine.

Accuracy changes are judged by the leaderboard's significance tests (stats.py: Welch's t-test
over seeds, or a paired bootstrap over the test examples of one seed each): a change is
better or worse only when it is significant and beyond the threshold. Time and memory are
compared only between records made on the same hardware (measure/hardware_identity.py);
across hardware they are shown but never judged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.table import Table

from peft_arena.common.errors import UserError
from peft_arena.report import markdown, stats
from peft_arena.report.results import CellDetail, load_results, summarise

BETTER, WORSE, SAME = "better", "worse", "same"
MARKS = {BETTER: "🟢", WORSE: "🔴", SAME: ""}
STYLES = {BETTER: "green", WORSE: "red", SAME: ""}


@dataclass(frozen=True)
class Thresholds:
    """The largest change in the worse direction that still counts as noise."""

    accuracy: float = 0.01  # absolute drop, fraction
    macro_f1: float = 0.01  # absolute drop
    time: float = 0.2  # relative increase of training time (0.2 = +20%)
    memory: float = 0.1  # relative increase of peak memory

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (value >= 0 and math.isfinite(value)):
                raise UserError(
                    f"--threshold-{name.replace('macro_', '')} {value}: give a number >= 0."
                )


@dataclass(frozen=True)
class Metric:
    name: str  # Thresholds field and row prefix
    column: str  # summary column compared
    header: str
    higher_is_better: bool
    relative: bool  # the threshold and the shown change are relative to the base value
    fmt: Callable[[float], str]


METRICS = (
    Metric("accuracy", "accuracy_mean", "accuracy", True, False, "{:.3f}".format),
    Metric("macro_f1", "macro_f1_mean", "macro F1", True, False, "{:.3f}".format),
    Metric("time", "train_s_mean", "train s", False, True, "{:,.1f}".format),
    Metric("memory", "peak_mb_mean", "peak MiB", False, True, "{:,.0f}".format),
)
# Measured by the machine: compared only between records made on the same hardware.
MACHINE_METRICS = ("time", "memory")
# Row outcomes beyond the metric changes.
REGRESSION, IMPROVED, UNCHANGED = "regression", "improved", "unchanged"
NEW, REMOVED, FAILED, FIXED = "new", "removed", "failed in head", "fixed"
STILL_FAILING = "failed in both"


@dataclass
class Comparison:
    rows: pd.DataFrame  # one row per (task, strategy) in either folder; see compare()
    thresholds: Thresholds
    base_line: str
    head_line: str
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> pd.DataFrame:
        return self.rows[self.rows["outcome"].isin([REGRESSION, FAILED])]

    @property
    def has_regression(self) -> bool:
        return not self.regressions.empty


def classify(metric: Metric, base: float, head: float, threshold: float) -> tuple[float, str]:
    """(change, BETTER | WORSE | SAME): the change is absolute, or relative to base."""
    if not (math.isfinite(base) and math.isfinite(head)):
        return math.nan, SAME
    change = head - base
    if metric.relative:
        change = change / base if base else math.nan
    if not math.isfinite(change):
        return change, SAME
    gain = change if metric.higher_is_better else -change
    # A little slack so that a change of exactly the threshold (0.85 -> 0.84 at 0.01) is not
    # flagged through floating-point noise.
    if gain < -threshold - 1e-9:
        return change, WORSE
    if gain > threshold + 1e-9:
        return change, BETTER
    return change, SAME


@dataclass
class _Side:
    frame: pd.DataFrame
    summary: pd.DataFrame
    details: dict[str, CellDetail]

    def ok_rows(self, task: str, strategy: str) -> pd.DataFrame:
        frame = self.frame
        return frame[(frame["task"] == task) & (frame["strategy"] == strategy)
                     & (frame["status"] == "ok") & frame["accuracy"].notna()]


def _summary(folder: Path) -> _Side:
    results = load_results(folder)
    if results.frame.empty:
        raise UserError(f"No records in {folder}: give a results folder that `peft-arena run` "
                        "wrote (it holds records/*.json).")
    return _Side(results.frame, summarise(results.frame), results.details)


def _accuracy_kind(key: tuple[str, str], base: _Side, head: _Side, change: float,
                   threshold: float) -> tuple[str, str]:
    """BETTER, WORSE or SAME for the accuracy change, and the test behind it."""
    head_rows, base_rows = head.ok_rows(*key), base.ok_rows(*key)
    if head_rows.empty or base_rows.empty or not math.isfinite(change):
        return SAME, ""
    significant, test = stats.accuracy_change(head_rows, base_rows, head.details, base.details)
    if not significant or abs(change) <= threshold + 1e-9:
        return SAME, test
    return (BETTER if change > 0 else WORSE), test


def _side_line(name: str, folder: Path, frame: pd.DataFrame) -> str:
    commits = sorted({str(c)[:10] for c in frame["git_commit"].dropna()})
    hardware = _hardware(frame)
    parts = [f"`{folder}`", f"{len(frame)} records"]
    if commits:
        parts.append(f"commit {', '.join(commits)}")
    if hardware:
        parts.append(hardware)
    return f"{name}: " + " · ".join(parts)


def _hardware(frame: pd.DataFrame) -> str:
    values = sorted({str(v) for column in ("gpu", "cpu") for v in frame[column].dropna()})
    return ", ".join(values)


def _outcome(row: dict[str, object], in_base: bool, in_head: bool) -> str:
    if not in_head:
        return REMOVED
    if not in_base:
        return NEW
    if row["base_ok"] and not row["head_ok"]:
        return FAILED
    if not row["base_ok"]:
        return FIXED if row["head_ok"] else STILL_FAILING
    changes = [row[f"{m.name}_change_kind"] for m in METRICS]
    if WORSE in changes:
        return REGRESSION
    return IMPROVED if BETTER in changes else UNCHANGED


def compare(base_dir: Path, head_dir: Path, thresholds: Thresholds | None = None) -> Comparison:
    """Match the cells of two results folders by (task, strategy) and classify every change.

    Rows hold, per metric m: m_base, m_head, m_change (absolute or relative, see METRICS),
    m_change_kind (BETTER, WORSE or SAME); and outcome: REGRESSION (some metric worse beyond
    its threshold), FAILED (ok in base, failed in head), STILL_FAILING, IMPROVED, UNCHANGED,
    FIXED, NEW or REMOVED. Regressions come first.
    """
    thresholds = thresholds or Thresholds()
    base_side, head_side = _summary(Path(base_dir)), _summary(Path(head_dir))
    base_frame, base = base_side.frame, base_side.summary
    head_frame, head = head_side.frame, head_side.summary
    keys = sorted(set(zip(base["task"], base["strategy"], strict=True))
                  | set(zip(head["task"], head["strategy"], strict=True)))
    base_rows = base.set_index(["task", "strategy"])
    head_rows = head.set_index(["task", "strategy"])
    rows, notes = [], []
    for key in keys:
        in_base, in_head = key in base_rows.index, key in head_rows.index
        old = base_rows.loc[key] if in_base else None
        new = head_rows.loc[key] if in_head else None
        row: dict[str, object] = {
            "task": key[0],
            "kind": kind if isinstance(kind := (new if in_head else old).get("kind"), str)
            else "classification",
            "strategy": key[1],
            "base_ok": bool(in_base and old["n_seeds"] > 0),
            "head_ok": bool(in_head and new["n_seeds"] > 0),
            "base_seeds": int(old["n_seeds"]) if in_base else 0,
            "head_seeds": int(new["n_seeds"]) if in_head else 0,
        }
        hardware = (old["hardware"] if in_base else None, new["hardware"] if in_head else None)
        row["other_hardware"] = (all(isinstance(h, str) for h in hardware)
                                 and hardware[0] != hardware[1])
        row["accuracy_test"] = ""
        for metric in METRICS:
            before = float(old[metric.column]) if in_base else math.nan
            after = float(new[metric.column]) if in_head else math.nan
            change, kind = classify(metric, before, after, getattr(thresholds, metric.name))
            if metric.name == "accuracy":
                kind, row["accuracy_test"] = _accuracy_kind(key, base_side, head_side, change,
                                                            thresholds.accuracy)
            elif metric.name in MACHINE_METRICS and row["other_hardware"]:
                change, kind = math.nan, SAME  # the machines differ, not the code
            row.update({f"{metric.name}_base": before, f"{metric.name}_head": after,
                        f"{metric.name}_change": change, f"{metric.name}_change_kind": kind})
        row["outcome"] = _outcome(row, in_base, in_head)
        if in_base and in_head and old["config_hash"] != new["config_hash"]:
            notes.append(f"{key[0]} / {key[1]}: the configuration changed "
                         f"({old['config_hash']} → {new['config_hash']}).")
        rows.append(row)
    frame = pd.DataFrame(rows)
    order = {REGRESSION: 0, FAILED: 1, STILL_FAILING: 2, IMPROVED: 3, FIXED: 4, UNCHANGED: 5,
             NEW: 6, REMOVED: 7}
    frame = frame.sort_values(["outcome", "task", "strategy"],
                              key=lambda s: s.map(order) if s.name == "outcome" else s,
                              ignore_index=True)
    if frame["other_hardware"].any():
        base_hw = ", ".join(sorted(base_frame["hardware"].dropna().unique()))
        head_hw = ", ".join(sorted(head_frame["hardware"].dropna().unique()))
        notes.insert(0, f"{int(frame['other_hardware'].sum())} cells ran on different "
                        f"hardware in base ({base_hw}) and head ({head_hw}): their time and "
                        "memory are shown but not compared.")
    return Comparison(frame, thresholds, _side_line("Base", Path(base_dir), base_frame),
                      _side_line("Head", Path(head_dir), head_frame), notes)


# --- rendering --------------------------------------------------------------------------------


def _change_text(metric: Metric, change: float) -> str:
    if not math.isfinite(change):
        return ""
    text = f"{change:+.1%}" if metric.relative else f"{change:+.3f}"
    return text.replace("-", "−")


def metric_cell(metric: Metric, row: pd.Series) -> str:
    """'base → head (change) mark' where both sides have a value, else the one there is."""
    before, after = row[f"{metric.name}_base"], row[f"{metric.name}_head"]
    if not (math.isfinite(before) and math.isfinite(after)):
        value = after if math.isfinite(after) else before
        return metric.fmt(value) if math.isfinite(value) else "—"
    if metric.name in MACHINE_METRICS and row.get("other_hardware"):
        return f"{metric.fmt(before)} → {metric.fmt(after)} (other hardware)"
    kind = row[f"{metric.name}_change_kind"]
    change = _change_text(metric, row[f"{metric.name}_change"])
    text = f"{metric.fmt(before)} → {metric.fmt(after)} ({change})"
    return f"{text} {MARKS[kind]}".rstrip()


def _threshold_text(thresholds: Thresholds) -> str:
    return (f"accuracy −{thresholds.accuracy:g} and significant, macro F1 "
            f"−{thresholds.macro_f1:g} absolute; "
            f"train time +{thresholds.time:.0%}, peak memory +{thresholds.memory:.0%} relative")


def headline(comparison: Comparison) -> str:
    n_regressions = len(comparison.regressions)
    n_cells = len(comparison.rows)
    if n_regressions:
        lead = f"**{n_regressions} regression{'s' if n_regressions > 1 else ''}**"
    else:
        lead = "No regressions"
    return f"{lead} in {n_cells} cells (thresholds: {_threshold_text(comparison.thresholds)})."


def to_markdown(comparison: Comparison) -> str:
    """The comparison as markdown, for a pull-request comment."""
    headers = ["task", "kind", "strategy", *(m.header for m in METRICS), "seeds", "result"]
    lines = [
        "## peft-arena compare", "", comparison.base_line + "  ", comparison.head_line, "",
        headline(comparison), "",
    ]
    rows = []
    for _, row in comparison.rows.iterrows():
        outcome = row["outcome"]
        result = f"**{outcome}**" if outcome in (REGRESSION, FAILED) else outcome
        rows.append([row["task"], row["kind"], row["strategy"],
                     *(metric_cell(m, row) for m in METRICS),
                     f"{row['base_seeds']} → {row['head_seeds']}", result])
    lines += [*markdown.table(headers, rows), "",
              "Cells read base → head (change): accuracy and F1 changes are absolute, "
              "time and memory changes relative; 🟢 better and 🔴 worse beyond the "
              "threshold, no mark = within it (noise). Values are means over seeds. "
              "An accuracy change counts only when the leaderboard's significance test "
              "says so (Welch's t-test over seeds, or a paired bootstrap over the test "
              "examples); time and memory from different hardware are not compared."]
    tested = [f"{r['task']} / {r['strategy']}: {r['accuracy_test']}"
              for _, r in comparison.rows.iterrows() if r.get("accuracy_test")]
    if tested:
        lines += ["", "Accuracy tests: " + "; ".join(tested) + "."]
    if comparison.notes:
        lines += ["", *(f"- {note}" for note in comparison.notes)]
    return "\n".join(lines) + "\n"


def _terminal_cell(metric: Metric, row: pd.Series) -> str:
    # Narrow enough for an 80-column terminal: the head value over its coloured change.
    after = row[f"{metric.name}_head"]
    change = _change_text(metric, row[f"{metric.name}_change"])
    if not change:
        return metric_cell(metric, row)
    style = STYLES[row[f"{metric.name}_change_kind"]]
    return f"{metric.fmt(after)}\n" + (f"[{style}]{change}[/]" if style else change)


def to_rich(comparison: Comparison) -> Table:
    """The comparison as a terminal table: head values and their change from base."""
    table = Table(title="peft-arena compare (head value, change from base)",
                  caption=headline(comparison).replace("**", ""))
    table.add_column("task")
    table.add_column("kind")
    table.add_column("strategy")
    for metric in METRICS:
        table.add_column(metric.header, justify="right")
    table.add_column("result")
    for _, row in comparison.rows.iterrows():
        cells = [_terminal_cell(metric, row) for metric in METRICS]
        outcome = row["outcome"]
        style = "bold red" if outcome in (REGRESSION, FAILED) else (
            "green" if outcome in (IMPROVED, FIXED) else "")
        table.add_row(row["task"], row["kind"], row["strategy"], *cells,
                      f"[{style}]{outcome}[/]" if style else outcome)
    return table
