"""The head against the generated label: one model tuned on one task's data both ways, a
classification head on the last token (`agnews`) and the label written as text by the LM
(`agnews-gen`), strategy by strategy.

A generation task pairs with the classification task whose name it extends by `-gen` (the
built-in `imdb-gen`, `agnews-gen` and `banking77-gen` read the same data files as their
classification forms), on the same model. For each pair the chart shows the test accuracy of
both ways per strategy (the untuned model's zero-shot answers as a line) beside what each
cell cost: its training time, and its test pass, which for generation is greedy decoding.
Times measured on different hardware are said to be so in the chart, never hidden.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from peft_arena.report.markdown import DASH, table
from peft_arena.report.results import model_label
from peft_arena.report.views.charts import DPI, HEAD_VS_GENERATION

GENERATION_SUFFIX = "-gen"
HEAD, GENERATED = "head", "generated label"
KIND_WAY = {"classification": HEAD, "generation": GENERATED}
WAY_COLOURS = {HEAD: "#0173b2", GENERATED: "#de8f05"}


def twin_pairs(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(model, classification task, generation task) for every model with successful cells of
    both a classification task and its `-gen` twin."""
    ok = frame[frame["status"] == "ok"]
    have = {(str(m), str(t), str(k))
            for m, t, k in ok[["model", "task", "kind"]].drop_duplicates().itertuples(
                index=False)}
    pairs = []
    for model, task, kind in sorted(have):
        base = task.removesuffix(GENERATION_SUFFIX)
        if (kind == "generation" and base != task
                and (model, base, "classification") in have):
            pairs.append((model, base, task))
    return pairs


def comparison(frame: pd.DataFrame, model: str, head_task: str, generation_task: str
               ) -> pd.DataFrame:
    """One row per strategy and way: mean and sd over successful seeds of accuracy, training
    and test-pass seconds, the seeds, the hardware its times come from, and for the generated
    way the invalid-answer share and the untuned model's accuracy."""
    ok = frame[(frame["status"] == "ok") & (frame["model"].astype(str) == model)
               & frame["task"].isin([head_task, generation_task])]
    label = ok["label"] if "label" in ok else ok["strategy"]
    prefix = f"{model_label(model)} "
    rows = ok.assign(way=ok["kind"].map(KIND_WAY),
                     strategy_label=label.astype(str).str.removeprefix(prefix))
    out = []
    for (strategy, way), group in rows.groupby(["strategy_label", "way"], sort=True):
        hardware = sorted(group["hardware"].dropna().astype(str).unique())
        out.append({
            "strategy": strategy, "way": way, "task": str(group["task"].iloc[0]),
            "n_seeds": len(group),
            **{f"{column}_{stat}": getattr(group[column].astype(float), stat)()
               for column in ("accuracy", "train_s", "eval_s", "decode_s")
               for stat in ("mean", "std")},
            "invalid_share": group["invalid_share"].astype(float).mean(),
            "zero_shot_accuracy": group["zero_shot_accuracy"].astype(float).mean(),
            "trainable": group["trainable"].astype(float).mean(),
            "hardware": ", ".join(hardware) or None,
        })
    return pd.DataFrame(out)


def write_head_vs_generation(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """charts/head_vs_generation.png where some model ran a task both ways; nothing (and no
    file) otherwise. `frame`: per-record rows with the report's `label` column."""
    pairs = twin_pairs(frame)
    if not pairs:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = [comparison(frame, *pair) for pair in pairs]
    n_strategies = max(t["strategy"].nunique() for t in tables)
    fig = Figure(figsize=(max(9.0, 2.0 + 2.4 * n_strategies), 4.2 * len(pairs)),
                 layout="constrained")
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for (accuracy_ax, time_ax), pair, rows in zip(axes, pairs, tables, strict=True):
        model, head_task, generation_task = pair
        _accuracy_panel(accuracy_ax, rows)
        accuracy_ax.set_title(f"{model_label(model)}: {head_task} (head) against "
                              f"{generation_task} (generated label)", fontsize=10)
        _time_panel(time_ax, rows)
        time_ax.set_title(_hardware_note(rows), fontsize=9, wrap=True)
    seeds = max(int(t["n_seeds"].max()) for t in tables)
    note = "mean ± 1 sd over seeds" if seeds > 1 else "single seed"
    fig.suptitle(f"Head against generated label, per strategy ({note})", fontsize=12)
    path = out_dir / f"{HEAD_VS_GENERATION}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return [path]


def _bars(ax, rows: pd.DataFrame, value: str, spread: str | None = None,
          bottom: str | None = None, **style) -> tuple[list[str], np.ndarray]:
    strategies = sorted(rows["strategy"].unique())
    x = np.arange(len(strategies))
    for offset, way in ((-0.2, HEAD), (0.2, GENERATED)):
        part = rows[rows["way"] == way].set_index("strategy").reindex(strategies)
        if part[value].isna().all():
            continue
        heights = part[value].to_numpy(dtype=float)
        errors = part[spread].to_numpy(dtype=float) if spread else None
        if errors is not None and not np.isfinite(errors).any():
            errors = None
        base = part[bottom].fillna(0).to_numpy(dtype=float) if bottom else None
        ax.bar(x + offset, heights, width=0.38, bottom=base, yerr=errors, capsize=3,
               color=WAY_COLOURS[way], label=way if not bottom else None, **style)
    ax.set_xticks(x, strategies)
    return strategies, x


def _accuracy_panel(ax, rows: pd.DataFrame) -> None:
    _bars(ax, rows, "accuracy_mean", "accuracy_std")
    zero_shot = rows.loc[rows["way"] == GENERATED, "zero_shot_accuracy"].dropna()
    if len(zero_shot):
        ax.axhline(float(zero_shot.mean()), color=WAY_COLOURS[GENERATED], linestyle=":",
                   linewidth=1.5, label="generated, untuned (zero-shot)")
    ax.set_ylim(0, 1.2)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("test accuracy (fraction correct)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper left", ncols=2)


def _time_panel(ax, rows: pd.DataFrame) -> None:
    _bars(ax, rows, "train_s_mean", "train_s_std")
    # The test pass on top of training, lighter: for generation it holds the greedy decoding.
    _bars(ax, rows, "eval_s_mean", bottom="train_s_mean", alpha=0.45, hatch="//")
    handles = [*ax.get_legend_handles_labels()[0],
               Patch(facecolor="white", edgecolor="black", hatch="//",
                     label="test pass (generation: greedy decoding)")]
    top = (rows["train_s_mean"].fillna(0) + rows["eval_s_mean"].fillna(0)).max()
    ax.set_ylim(0, 1.35 * top if top > 0 else 1)  # room for the legend above the bars
    ax.set_ylabel("seconds per cell: training, then the test pass")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(handles=handles, fontsize=8, loc="upper left")


def _hardware_note(rows: pd.DataFrame) -> str:
    by_way = {way: text for way, text in rows.groupby("way")["hardware"].first().items()
              if isinstance(text, str)}
    if len(set(by_way.values())) > 1:
        return ("Times on different hardware, not comparable: "
                + "; ".join(f"{way} on {text}" for way, text in sorted(by_way.items())))
    return f"Times on {next(iter(by_way.values()), 'unrecorded hardware')}"


def _fmt(value: object, spec: str) -> str:
    number = float(value) if isinstance(value, (int, float, np.number)) else math.nan
    return DASH if not math.isfinite(number) else format(number, spec)


def _one(group: pd.DataFrame, way: str) -> pd.Series:
    """The strategy's row for one way, or a row of NaN where that way has no cell."""
    rows = group[group["way"] == way]
    return rows.iloc[0] if len(rows) else pd.Series(math.nan, index=group.columns)


def comparison_lines(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Markdown under each generation task's table that has a classification twin: per model
    and strategy, the head's and the generated label's accuracy, their difference, and what
    each cost (training seconds; the generated way's decoding seconds)."""
    out: dict[str, list[str]] = {}
    for model, head_task, generation_task in twin_pairs(frame):
        rows = comparison(frame, model, head_task, generation_task)
        lines = [f"**Head against generated label** ({model_label(model)}: `{head_task}` with "
                 f"a classification head, `{generation_task}` with the label written as text; "
                 f"chart `head_vs_generation.png`):", ""]
        body = []
        for strategy, group in rows.groupby("strategy", sort=True):
            head, generated = (_one(group, way) for way in (HEAD, GENERATED))
            difference = generated["accuracy_mean"] - head["accuracy_mean"]
            body.append([strategy, _fmt(head["accuracy_mean"], ".3f"),
                         _fmt(generated["accuracy_mean"], ".3f"),
                         _fmt(100 * difference, "+.1f").replace("-", "−"),
                         _fmt(generated["invalid_share"], ".1%"),
                         _fmt(generated["zero_shot_accuracy"], ".3f"),
                         _fmt(head["train_s_mean"], ",.0f"),
                         _fmt(generated["train_s_mean"], ",.0f"),
                         _fmt(generated["decode_s_mean"], ",.1f")])
        lines += table(["strategy", "head acc.", "generated acc.", "Δ pts", "invalid",
                        "zero-shot", "head train s", "generated train s", "decode s"], body)
        lines += ["", _hardware_note(rows) + ".", ""]
        out.setdefault(generation_task, []).extend(lines)
    return out
