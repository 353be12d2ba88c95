"""The `peft-arena` command: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from peft_arena.errors import UserError

console = Console()
err_console = Console(stderr=True)


def _names(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _seeds(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(part) for part in _names(value)]
    except ValueError:
        raise UserError(f"--seeds {value!r}: give whole numbers, e.g. --seeds 0,1,2.") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="peft-arena")
def cli() -> None:
    """Benchmark fine-tuning strategies (full, LoRA, QLoRA, IA3, AdaLoRA, ...) across
    text-classification tasks."""


@cli.command()
@click.option("--matrix", "tasks", help="Tasks, comma-separated (built-in names or task YAML "
              "files). Default: the preset's tasks.")
@click.option("--strategies", help="Strategies, comma-separated. Default: the preset's.")
@click.option("--model", help="Model alias, local folder or Hub id. Default: the preset's.")
@click.option("--preset", default="quick", show_default=True, help="Preset name or YAML file.")
@click.option("--seeds", help="Seeds, comma-separated. Default: the preset's.")
@click.option("--epochs", type=float, help="Training epochs for every cell.")
@click.option("--max-train-samples", type=int, help="Seeded, stratified training subset size.")
@click.option("--max-eval-samples", type=int, help="Cap on validation and test examples.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
              help="Arithmetic precision (default auto: bf16 where the hardware has it).")
@click.option("--data-dir", envvar="PEFT_ARENA_DATA_DIR", type=click.Path(),
              help="Read DIR/<task>/{train,test}.{jsonl,csv,parquet} instead of the Hub "
              "[env: PEFT_ARENA_DATA_DIR].")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False), help="Folder for records and reports.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a setting: learning_rate=1e-3 for all, lora.r=16 for one strategy.")
@click.option("--retry-failed", is_flag=True, help="Run cells again whose record says failed.")
@click.option("--dry-run", is_flag=True, help="Print the cells and their settings; train nothing.")
def run(tasks, strategies, model, preset, seeds, epochs, max_train_samples, max_eval_samples,
        precision, data_dir, results_dir, sets, retry_failed, dry_run) -> None:
    """Run every task x strategy x seed cell that has no record yet."""
    from peft_arena import api

    cells = api.plan_cells(
        tasks=_names(tasks) or None, strategies=_names(strategies) or None, model=model,
        preset=preset, seeds=_seeds(seeds), sets=list(sets),
        flags={"epochs": epochs, "max_train_samples": max_train_samples,
               "max_eval_samples": max_eval_samples, "precision": precision},
    )
    if dry_run:
        console.print(_plan_table(cells))
        return
    from peft_arena.matrix import run_matrix

    console.print(f"[bold]{len(cells)} cells[/] -> {results_dir}/records")
    result = run_matrix(cells, results_dir, data_dir, retry_failed=retry_failed,
                        on_event=_print_event)
    _print_summary(result, results_dir)
    if result.interrupted:
        sys.exit(130)
    if result.failed:
        sys.exit(1)


def _plan_table(cells) -> Table:
    table = Table(title=f"{len(cells)} cells")
    for column in ("task", "strategy", "seed", "lr", "epochs", "batch", "max len", "train n",
                   "peft settings"):
        table.add_column(column)
    for c in cells:
        peft = ", ".join(f"{k}={v}" for k, v in c.peft.items() if v is not None) or "-"
        table.add_row(c.task, c.strategy, str(c.seed), f"{c.learning_rate:g}", f"{c.epochs:g}",
                      str(c.batch_size), str(c.max_length), str(c.max_train_samples or "all"),
                      peft)
    return table


def _print_event(kind: str, index: int, total: int, outcome) -> None:
    spec = outcome.spec
    name = f"[{index}/{total}] {spec.task} · {spec.strategy} · seed {spec.seed}"
    if kind == "start":
        console.print(f"[bold]{name}[/]")
        return
    if outcome.status == "ok":
        m = outcome.record["metrics"]
        console.print(f"  [green]ok[/] accuracy {m['accuracy']:.4f}  macro F1 "
                      f"{m['macro_f1']:.4f}  ({outcome.seconds:.0f} s)")
    elif outcome.status == "failed":
        console.print(f"  [red]failed[/] {outcome.message}")
    else:
        console.print(f"  [dim]{outcome.status}: {outcome.message}[/]")


def _print_summary(result, results_dir: str) -> None:
    counts = {s: result.count(s) for s in ("ok", "failed", "skipped", "busy")}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing ran")
    if result.interrupted:
        console.print("[yellow]Interrupted.[/] Finished cells are kept; run the same command "
                      "again to resume.")
    if result.failed:
        console.print("Some cells failed; see their records. Rerun with --retry-failed to "
                      "try them again.")
    console.print(f"Next: peft-arena report --results {results_dir}")


@cli.command()
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False), help="Folder with the records.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where to write the report (default: the results folder).")
def report(results_dir: str, out_dir: str | None) -> None:
    """Write the leaderboard (markdown), CSV and charts, and print the table."""
    from peft_arena.report import build_report, rich_table

    result = build_report(Path(results_dir), Path(out_dir) if out_dir else None)
    console.print(rich_table(result.summary))
    for path in result.paths:
        console.print(f"wrote {path}")


@cli.command(name="list")
def list_command() -> None:
    """Show the strategies and tasks with their defaults."""
    from peft_arena import api

    strategies = Table(title="strategies")
    for column in ("name", "what", "learning rate", "PEFT defaults"):
        strategies.add_column(column)
    for info in api.strategy_infos():
        strategies.add_row(info["name"], info["summary"], f"{info['learning_rate']:g}",
                           info["peft_defaults"])
    tasks = Table(title="tasks")
    for column in ("name", "labels", "max length", "Hub source"):
        tasks.add_column(column)
    for info in api.task_infos():
        tasks.add_row(info["name"], str(info["labels"]), str(info["max_length"]), info["hub"])
    console.print(strategies, tasks)
    console.print(f"presets: {', '.join(api.preset_names())}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(UserError.exit_code)
    except click.exceptions.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
