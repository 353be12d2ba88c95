"""What the CLI prints: tables (boxes on a terminal, markdown rows elsewhere), each cell's
progress lines, and the run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from peft_arena import api

console = Console()
err_console = Console(stderr=True)
for _stream in (console, err_console):
    # A log or a pipe keeps each line whole: nothing there re-flows text the way a terminal
    # does, and rich would otherwise break lines at 80 columns.
    _stream.soft_wrap = not _stream.is_terminal


def show(*tables: Table) -> None:
    """Tables for a terminal as boxes; elsewhere (a CI log, a pipe) as markdown rows, whole:
    rich would fold or cut them to the width of a terminal that is not there."""
    if console.is_terminal:
        console.print(*tables)
        return
    for table in tables:
        headers = [Text.from_markup(str(column.header)).plain for column in table.columns]
        rows = zip(*([plain(cell) for cell in column.cells] for column in table.columns),
                   strict=True)
        title = [Text.from_markup(str(table.title)).plain, ""] if table.title else []
        print("\n".join([*title, *api.markdown_table(headers, list(rows)), ""]))


def plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def plan_table(cells, counts) -> Table:
    # Few columns and a light frame, so an 80-column terminal still shows whole numbers.
    table = Table(title=f"{len(cells)} cells", box=box.SIMPLE_HEAD)
    with_model = several_models(cells)
    for column in ("task", *(("model",) if with_model else ()), "strategy", "seed",
                   "training", "peft settings"):
        table.add_column(column, overflow="fold")
    for column in ("trainable", "total", "%"):
        table.add_column(column, justify="right", no_wrap=True)
    for c, n in zip(cells, counts, strict=True):
        training = (f"lr={c.learning_rate:g}, epochs={c.epochs:g}, batch={c.batch_size}, "
                    f"max_length={c.max_length}, train_n={c.max_train_samples or 'all'}, "
                    f"{api.precision_name(c.precision)}")
        peft = ", ".join(f"{k}={v}" for k, v in c.peft.items() if v is not None) or "-"
        table.add_row(c.task, *model_cell(c, with_model), c.strategy, str(c.seed), training,
                      peft, f"{n.trainable:,}", f"{n.total:,}", f"{n.trainable_pct:.2f}")
    return table


def several_models(cells) -> bool:
    """A preset with `models:` plans the same task and strategy once per model: the tables
    then name the model, or their rows would read as duplicates."""
    return len({c.model for c in cells}) > 1


def model_cell(cell, shown: bool) -> tuple[str, ...]:
    return (api.model_label(cell.model),) if shown else ()


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def memory_table(cells, estimates) -> Table:
    """The training-memory estimate per cell, in GiB; the activations column that applies
    (with or without gradient checkpointing) is the one the total counts."""
    table = Table(title="Estimated training memory (GiB; no CUDA context or allocator reserve)",
                  box=box.SIMPLE_HEAD)
    with_model = several_models(cells)
    for column in ("task", *(("model",) if with_model else ()), "strategy", "batch x length"):
        table.add_column(column, overflow="fold")
    for column in ("weights", "grads+AdamW", "activations", "with checkpointing", "total"):
        table.add_column(column, justify="right", no_wrap=True)
    for c, e in zip(cells, estimates, strict=True):
        if c.seed != cells[0].seed:
            continue  # seeds share the estimate
        marks = ("", " *") if e.gradient_checkpointing else (" *", "")
        table.add_row(c.task, *model_cell(c, with_model), c.strategy,
                      f"{c.batch_size} x {c.max_length}",
                      gib(e.weights_bytes),
                      gib(e.gradients_bytes + e.optimizer_bytes + e.autocast_bytes),
                      gib(e.activations_bytes) + marks[0],
                      gib(e.activations_checkpointed_bytes) + marks[1],
                      gib(e.total_bytes))
    table.caption = "* counted in the total (set gradient_checkpointing=true for the other)"
    return table


@dataclass
class RunLog:
    """What a run has printed so far: the notes on how its cells ran (each printed once per
    run), and the header of the cell that started last, if nothing was printed since."""

    notes_shown: set[str] = field(default_factory=set)
    open_header: str | None = None


def retention_missing(record: dict) -> str | None:
    """Why an ok cell recorded no retention figures, or None when it has them (or was told
    not to measure them: `measure_retention: false` leaves the section out)."""
    section = record.get("retention")
    if not (record.get("spec") or {}).get("measure_retention", True) or \
            not isinstance(section, dict):
        return None
    if section.get("measured") is False:
        return str(section.get("reason") or "not measured")[:200]
    return None


def print_event(kind: str, index: int, total: int, outcome, *,
                notes_shown: set[str] | None = None, log: RunLog | None = None) -> None:
    """A cell's header line when it starts, and its outcome when it ends. `notes_shown`: the
    notes on how a cell ran (its 4-bit kernels) that this run has printed already (`log`
    holds them for a whole run)."""
    if log is not None:
        notes_shown = log.notes_shown
    spec = outcome.spec
    name = f"[{index}/{total}] {spec.task} · {spec.strategy} · seed {spec.seed}"
    if getattr(spec, "evaluate_on", "test") == "validation":
        name += " · search trial (scored on validation)"
    if kind == "start":
        console.print(f"[bold]{name}[/]")
        if log is not None:
            log.open_header = name
        return
    # Cells in parallel end in any order: an outcome names its cell again, unless its own
    # header is the line just above it.
    if outcome.status in ("ok", "failed") and (log is None or log.open_header != name):
        console.print(f"[dim]{name}[/]")
    if log is not None:
        log.open_header = None
    if outcome.status == "ok":
        m = outcome.record["metrics"]
        console.print(f"  [green]ok[/] accuracy {m['accuracy']:.4f}  macro F1 "
                      f"{m['macro_f1']:.4f}  ({outcome.seconds:.0f} s)")
        if why := retention_missing(outcome.record):
            console.print(f"  [yellow]no retention figures:[/] {escape(why)}")
        note = outcome.record.get("resolved", {}).get("four_bit_kernel")
        if note and (notes_shown is None or note not in notes_shown):
            console.print(f"  [dim]{escape(note)}[/]")
            if notes_shown is not None:
                notes_shown.add(note)
    elif outcome.status == "failed":
        console.print(f"  [red]failed[/] {outcome.message}")
    elif outcome.status == "over_budget":
        console.print(f"  [yellow]skipped, over budget:[/] {outcome.message}")
    else:
        console.print(f"  [dim]{outcome.status}: {outcome.message}[/]")


def print_summary(result, results_dir: str) -> None:
    counts = {s: result.count(s) for s in ("ok", "failed", "skipped", "busy", "over_budget")}
    console.print(f"run {result.run_id}: "
                  + (", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n)
                     or "nothing ran"))
    if result.interrupted:
        finished = [o.spec.cell_id for o in result.outcomes if o.status in ("ok", "failed")]
        console.print(f"[yellow]Interrupted.[/] {len(finished)} cells finished in this run and "
                      f"are kept{': ' + ', '.join(finished) if finished else ''}; "
                      f"{result.not_reached} were not finished. Run the same command again to "
                      "resume: recorded cells are skipped.")
    if line := result.base_side.summary():
        console.print(f"[dim]{escape(line)}[/]")
    for machine, n in result.other_hardware.items():
        console.print(f"[yellow]note:[/] {n} cells were skipped because {results_dir} holds "
                      f"their records from other hardware ({escape(machine)}); for numbers "
                      f"from this machine run with another --results folder, then `peft-arena "
                      f"compare {results_dir} THAT_FOLDER`.")
    if counts["busy"]:
        console.print(f"{counts['busy']} cells were left to another run on the same results "
                      "folder; run the same command again once it ends to pick up any it missed.")
    if result.failed:
        console.print("Some cells failed; see their records. Rerun with --retry-failed to "
                      "try them again.")
    console.print(f"Next: peft-arena report --results {results_dir}")


def settings_text(settings: dict) -> str:
    text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in settings.items())
    return escape(text) or "-"  # module lists print as [...], which is not markup


def print_trial(row) -> None:
    score = f"validation accuracy {row.values['accuracy']:.4f}" if row.values else row.state
    extra = "  (defaults)" if row.baseline else ""
    console.print(f"  trial {row.number}: {score}{extra}  {settings_text(row.settings)}")


def trials_table(result) -> Table:
    table = Table(title=f"study {result.study_name}", box=box.SIMPLE_HEAD)
    for column in ("trial", "state", *result.objectives, "settings"):
        table.add_column(column)
    for row in result.trials:
        values = [f"{row.values[o]:.4g}" if row.values else "-" for o in result.objectives]
        name = f"{row.number}{' *' if row.number == result.best.number else ''}"
        table.add_row(name, row.state + (" (defaults)" if row.baseline else ""), *values,
                      settings_text(row.settings))
    return table


