"""The `peft-arena` command: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from peft_arena.config.spec import EARLY_STOPPING_METRICS, PRECISIONS, TRACKERS
from peft_arena.errors import UserError

console = Console()
err_console = Console(stderr=True)
for _stream in (console, err_console):
    # A log or a pipe keeps each line whole: nothing there re-flows text the way a terminal
    # does, and rich would otherwise break lines at 80 columns.
    _stream.soft_wrap = not _stream.is_terminal


def _show(*tables: Table) -> None:
    """Tables for a terminal as boxes; elsewhere (a CI log, a pipe) as markdown rows, whole:
    rich would fold or cut them to the width of a terminal that is not there."""
    if console.is_terminal:
        console.print(*tables)
        return
    from peft_arena.report.markdown import table as markdown_table

    for table in tables:
        headers = [Text.from_markup(str(column.header)).plain for column in table.columns]
        rows = zip(*([_plain(cell) for cell in column.cells] for column in table.columns),
                   strict=True)
        title = [Text.from_markup(str(table.title)).plain, ""] if table.title else []
        print("\n".join([*title, *markdown_table(headers, list(rows)), ""]))


def _plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def _names(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _listed(value: str | None, option: str, example: str) -> list[str] | None:
    """None when the option is absent (the preset decides); an error when it names nothing."""
    if value is None:
        return None
    names = _names(value)
    if not names:
        raise UserError(f"{option} {value!r} names nothing; give at least one, e.g. "
                        f"{option} {example}, or leave the option out for the preset's.")
    return names


_COUNT_SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


def _parameter_count(value: str | None, option: str) -> int | None:
    """'1M', '500K', '1.5M' or '1000000' as a whole number of parameters."""
    if value is None:
        return None
    text = value.strip().upper().replace(",", "").replace("_", "")
    scale = _COUNT_SUFFIXES.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in _COUNT_SUFFIXES else text
    try:
        count = round(float(number) * scale)
    except (ValueError, OverflowError):  # not a number, or 'inf'
        count = 0
    if count < 1:
        raise UserError(f"{option} {value!r}: give a positive count, e.g. 1M, 500K or 1000000.")
    return count


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
@click.option("--strategies", help="Strategies, comma-separated; 'all': every strategy that "
                                   "applies to the model. Default: the preset's.")
@click.option("--model", help="Model alias (minilm, smollm2), local folder, GGUF file or Hub id. "
              "Default: the preset's.")
@click.option("--preset", default="quick", show_default=True, help="Preset name or YAML file.")
@click.option("--seeds", help="Seeds, comma-separated. Default: the preset's.")
@click.option("--epochs", type=float, help="Training epochs for every cell.")
@click.option("--max-train-samples", type=int, help="Seeded, stratified training subset size.")
@click.option("--max-eval-samples", type=int, help="Cap on validation and test examples.")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Arithmetic precision (default auto: bf16 where the hardware has it).")
@click.option("--data-dir", envvar="PEFT_ARENA_DATA_DIR", type=click.Path(),
              help="Read DIR/<task>/{train,test}.{jsonl,csv,parquet} instead of the Hub "
              "[env: PEFT_ARENA_DATA_DIR].")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False), help="Folder for records and reports.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a setting: learning_rate=1e-3 for all, lora.r=16 for one strategy.")
@click.option("--retry-failed", is_flag=True, help="Run cells again whose record says failed.")
@click.option("--trust-remote-code", is_flag=True,
              help="Let the model run Python code from its own folder or Hub repository. Off by "
              "default: only for models whose source you trust.")
@click.option("--dry-run", is_flag=True, help="Print the cells, their settings and parameter "
              "counts; train nothing (needs only each model's config.json).")
@click.option("--eval-every", metavar="epoch|N",
              help="Validate once per epoch (default) or every N optimizer steps.")
@click.option("--early-stopping-patience", type=click.IntRange(min=1), metavar="K",
              help="Stop after K validation passes without improvement; the best pass's "
              "weights are restored before the test.")
@click.option("--early-stopping-metric",
              type=click.Choice(list(EARLY_STOPPING_METRICS)),
              help="What early stopping watches (default val_accuracy).")
@click.option("--max-trainable-params", metavar="N",
              help="Skip every cell with more trainable parameters (1M, 500K or 1000000), "
              "counted before any training.")
@click.option("--save-model", is_flag=True, help="Keep each cell's trained adapter (or model) "
              "in RESULTS/models/<cell id>/ for `peft-arena export`.")
@click.option("--tracker", type=click.Choice(TRACKERS),
              help="Log each cell to an experiment tracker (needs its optional extra).")
@click.option("--executor", "executor_name", metavar="local|ray|slurm",
              help="Where cells run: local processes (default), Ray tasks, Slurm jobs.")
@click.option("--workers", type=int, help="local: cells at once (default 1); each gets its own "
              "GPU(s), or on CPU an equal share of the cores.")
@click.option("--ray-address", help="ray: the cluster to join (default RAY_ADDRESS, else a "
              "local cluster for this run).")
@click.option("--slurm-partition", help="slurm: partition of every cell's job.")
@click.option("--slurm-time", type=click.IntRange(min=1), metavar="MINUTES",
              help="slurm: time limit of every cell's job (default 60).")
@click.option("--slurm-gpus", type=click.IntRange(min=0), help="slurm: GPUs per cell's job.")
@click.option("--slurm-cpus", type=click.IntRange(min=1), help="slurm: CPUs per cell's job.")
@click.option("--slurm-mem", type=float, metavar="GB", help="slurm: memory per cell's job.")
@click.option("--slurm-account", help="slurm: account to charge.")
@click.option("--slurm-cluster", hidden=True,
              help="submitit cluster: 'local' runs jobs as local processes (tests).")
def run(tasks, strategies, model, preset, seeds, epochs, max_train_samples, max_eval_samples,
        precision, data_dir, results_dir, sets, retry_failed, trust_remote_code,
        dry_run, eval_every, early_stopping_patience, early_stopping_metric,
        max_trainable_params, save_model, tracker, executor_name, workers, ray_address,
        slurm_partition, slurm_time, slurm_gpus, slurm_cpus, slurm_mem, slurm_account,
        slurm_cluster) -> None:
    """Run every task x strategy x seed cell that has no record yet.

    Exit status: 0 all cells recorded ok (or left to another run), 1 some cells failed,
    2 bad input (nothing is run), 130 interrupted (run the same command again to resume).
    """
    from peft_arena import api

    cells = api.plan_cells(
        tasks=_listed(tasks, "--matrix", "banking77"),
        strategies=_listed(strategies, "--strategies", "lora"), model=model,
        preset=preset, seeds=_seeds(seeds), sets=list(sets),
        flags={"epochs": epochs, "max_train_samples": max_train_samples,
               "max_eval_samples": max_eval_samples, "precision": precision,
               "eval_every": eval_every, "early_stopping_patience": early_stopping_patience,
               "early_stopping_metric": early_stopping_metric, "tracker": tracker,
               "save_model": save_model or None},
    )
    budget = _parameter_count(max_trainable_params, "--max-trainable-params")
    slurm = {"partition": slurm_partition, "time_min": slurm_time, "gpus_per_cell": slurm_gpus,
             "cpus_per_cell": slurm_cpus, "mem_gb": slurm_mem, "account": slurm_account,
             "cluster": slurm_cluster}
    executor = api.executor_settings(
        preset, name=executor_name, workers=workers, ray_address=ray_address,
        slurm={k: v for k, v in slurm.items() if v is not None})
    if dry_run:
        _show(_plan_table(cells, api.plan_parameters(cells, data_dir)),
              _memory_table(cells, api.plan_memory(cells, data_dir)))
        return
    from peft_arena.cell.trackers import check_available
    from peft_arena.matrix.execute import run_matrix

    for name in {c.tracker for c in cells}:
        check_available(name)  # once here, not once per cell process
    where = executor.name + (f", {executor.workers} at once" if executor.workers > 1 else "")
    console.print(f"[bold]{len(cells)} cells[/] -> {results_dir}/records ({where})")
    result = run_matrix(cells, results_dir, data_dir, retry_failed=retry_failed,
                        on_event=functools.partial(_print_event, notes_shown=set()),
                        trust_remote_code=trust_remote_code,
                        max_trainable_params=budget, executor=executor)
    _print_summary(result, results_dir)
    if result.interrupted:
        sys.exit(130)
    if result.failed:
        sys.exit(1)


def _plan_table(cells, counts) -> Table:
    from peft_arena.cell.precision import resolve_precision  # what "auto" means on this machine

    # Few columns and a light frame, so an 80-column terminal still shows whole numbers.
    table = Table(title=f"{len(cells)} cells", box=box.SIMPLE_HEAD)
    with_model = _several_models(cells)
    for column in ("task", *(("model",) if with_model else ()), "strategy", "seed",
                   "training", "peft settings"):
        table.add_column(column, overflow="fold")
    for column in ("trainable", "total", "%"):
        table.add_column(column, justify="right", no_wrap=True)
    for c, n in zip(cells, counts, strict=True):
        training = (f"lr={c.learning_rate:g}, epochs={c.epochs:g}, batch={c.batch_size}, "
                    f"max_length={c.max_length}, train_n={c.max_train_samples or 'all'}, "
                    f"{resolve_precision(c.precision).name}")
        peft = ", ".join(f"{k}={v}" for k, v in c.peft.items() if v is not None) or "-"
        table.add_row(c.task, *_model_cell(c, with_model), c.strategy, str(c.seed), training,
                      peft, f"{n.trainable:,}", f"{n.total:,}", f"{n.trainable_pct:.2f}")
    return table


def _several_models(cells) -> bool:
    """A preset with `models:` plans the same task and strategy once per model: the tables
    then name the model, or their rows would read as duplicates."""
    return len({c.model for c in cells}) > 1


def _model_cell(cell, shown: bool) -> tuple[str, ...]:
    from peft_arena.report.results import model_label

    return (model_label(cell.model),) if shown else ()


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def _memory_table(cells, estimates) -> Table:
    """The training-memory estimate per cell, in GiB; the activations column that applies
    (with or without gradient checkpointing) is the one the total counts."""
    table = Table(title="Estimated training memory (GiB; no CUDA context or allocator reserve)",
                  box=box.SIMPLE_HEAD)
    with_model = _several_models(cells)
    for column in ("task", *(("model",) if with_model else ()), "strategy", "batch x length"):
        table.add_column(column, overflow="fold")
    for column in ("weights", "grads+AdamW", "activations", "with checkpointing", "total"):
        table.add_column(column, justify="right", no_wrap=True)
    for c, e in zip(cells, estimates, strict=True):
        if c.seed != cells[0].seed:
            continue  # seeds share the estimate
        marks = ("", " *") if e.gradient_checkpointing else (" *", "")
        table.add_row(c.task, *_model_cell(c, with_model), c.strategy,
                      f"{c.batch_size} x {c.max_length}",
                      _gib(e.weights_bytes),
                      _gib(e.gradients_bytes + e.optimizer_bytes + e.autocast_bytes),
                      _gib(e.activations_bytes) + marks[0],
                      _gib(e.activations_checkpointed_bytes) + marks[1],
                      _gib(e.total_bytes))
    table.caption = "* counted in the total (set gradient_checkpointing=true for the other)"
    return table


def _print_event(kind: str, index: int, total: int, outcome, *,
                 notes_shown: set[str] | None = None) -> None:
    """`notes_shown`: the notes on how a cell ran (its 4-bit kernels) that this run has
    printed already; each is printed once per run."""
    spec = outcome.spec
    name = f"[{index}/{total}] {spec.task} · {spec.strategy} · seed {spec.seed}"
    if kind == "start":
        console.print(f"[bold]{name}[/]")
        return
    if outcome.status in ("ok", "failed"):  # cells in parallel end in any order: say which
        console.print(f"[dim]{name}[/]")
    if outcome.status == "ok":
        m = outcome.record["metrics"]
        console.print(f"  [green]ok[/] accuracy {m['accuracy']:.4f}  macro F1 "
                      f"{m['macro_f1']:.4f}  ({outcome.seconds:.0f} s)")
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


def _print_summary(result, results_dir: str) -> None:
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


@cli.command()
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False), help="Folder with the records.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where to write the report (default: the results folder).")
@click.option("--confusion", is_flag=True,
              help="Also draw a confusion matrix per task and strategy (charts/confusion/).")
@click.option("--chart-links/--no-chart-links", default=True, show_default=True,
              help="List the charts in leaderboard.md; leave them out where the files cannot "
              "be shown, such as a pull-request comment (report.html embeds them either way).")
def report(results_dir: str, out_dir: str | None, confusion: bool, chart_links: bool) -> None:
    """Write the leaderboard (markdown), report.html, CSV and charts, and print the table."""
    from peft_arena.report.build import build_report, rich_table

    result = build_report(Path(results_dir), Path(out_dir) if out_dir else None,
                          confusion=confusion, chart_links=chart_links)
    _show(rich_table(result.summary))
    for path in result.paths:
        console.print(f"wrote {path}")


@cli.command()
@click.argument("base", type=click.Path(file_okay=False))
@click.argument("head", type=click.Path(file_okay=False))
@click.option("--threshold-accuracy", default=0.01, show_default=True, type=float,
              help="Largest accuracy drop that is not a regression (absolute, 0.01 = 1 point).")
@click.option("--threshold-f1", default=0.01, show_default=True, type=float,
              help="Largest macro F1 drop that is not a regression (absolute).")
@click.option("--threshold-time", default=0.2, show_default=True, type=float,
              help="Largest training-time increase that is not a regression (0.2 = +20%).")
@click.option("--threshold-memory", default=0.1, show_default=True, type=float,
              help="Largest peak-memory increase that is not a regression (0.1 = +10%).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False),
              help="Also write the comparison as markdown (e.g. for a pull-request comment).")
@click.option("--fail-on-regression", is_flag=True,
              help="Exit with status 1 when any cell regressed.")
def compare(base, head, threshold_accuracy, threshold_f1, threshold_time, threshold_memory,
            out_file, fail_on_regression) -> None:
    """Compare two results folders (BASE, then HEAD) cell by cell and flag regressions."""
    from peft_arena.report import compare as comparing

    thresholds = comparing.Thresholds(accuracy=threshold_accuracy, macro_f1=threshold_f1,
                                      time=threshold_time, memory=threshold_memory)
    comparison = comparing.compare(Path(base), Path(head), thresholds)
    _show(comparing.to_rich(comparison))
    for note in comparison.notes:
        console.print(f"[yellow]note:[/] {note}")
    if out_file:
        Path(out_file).write_text(comparing.to_markdown(comparison), encoding="utf-8")
        console.print(f"wrote {out_file}")
    if fail_on_regression and comparison.has_regression:
        sys.exit(1)


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True,
              help="Print strategies (with the model families each applies to), tasks, presets "
                   "and the methods that do not apply, as JSON.")
def list_command(as_json: bool) -> None:
    """Show the strategies and tasks with their defaults."""
    from peft_arena import api

    if as_json:
        import json

        click.echo(json.dumps({"strategies": api.strategy_infos(), "tasks": api.task_infos(),
                               "presets": api.preset_names(),
                               "does_not_apply": api.inapplicable_infos()}, indent=2))
        return
    strategies = Table(title="strategies")
    for column in ("name", "what", "learning rate", "families", "PEFT defaults"):
        strategies.add_column(column)
    for info in api.strategy_infos():
        strategies.add_row(info["name"], info["summary"], f"{info['learning_rate']:g}",
                           ", ".join(info["families"]), info["peft_defaults"])
    inapplicable = Table(title="methods that do not apply")
    for column in ("name", "where", "why"):
        inapplicable.add_column(column)
    for info in api.inapplicable_infos():
        inapplicable.add_row(info["name"], ", ".join(info["families"]) or "any classifier",
                             escape(info["reason"]))
    tasks = Table(title="tasks")
    for column in ("name", "labels", "max length", "Hub source"):
        tasks.add_column(column)
    for info in api.task_infos():
        tasks.add_row(info["name"], str(info["labels"]), str(info["max_length"]), info["hub"])
    _show(strategies, inapplicable, tasks)
    console.print(f"presets: {', '.join(api.preset_names())}")


@cli.command()
@click.argument("record", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the model to (new or empty).")
@click.option("--merge", is_flag=True, help="Fold the adapter into the base model: a plain "
              "transformers model (QLoRA: into a de-quantized full-precision copy of the base).")
def export(record: str, out_dir: str, merge: bool) -> None:
    """Export a cell run with --save-model: its adapter in PEFT format, or a merged model,
    with the tokenizer and the label names."""
    from peft_arena.tools.export import export_model

    kind = export_model(record, out_dir, merge=merge)
    console.print(f"wrote {kind} model to {out_dir}")
    console.print(f"Next: peft-arena predict --model {out_dir} --input FILE --out preds.csv")


@cli.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="A folder written by `peft-arena export` (or any transformers classifier).")
@click.option("--input", "input_file", required=True, type=click.Path(dir_okay=False),
              help="Texts to label: .csv, .jsonl or .parquet.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="CSV to write: ID,label[,label_name,confidence].")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", help="Column with row IDs. Default: the row number.")
@click.option("--with-names", is_flag=True, help="Add the label name and its probability.")
@click.option("--batch-size", default=128, show_default=True, type=int)
def predict(model_dir, input_file, out_file, text_column, id_column, with_names,
            batch_size) -> None:
    """Label every text of a file with a trained model."""
    from peft_arena.tools.predict import predict_file

    predictions = predict_file(model_dir, input_file, out_file, text_column=text_column,
                               id_column=id_column, with_names=with_names,
                               batch_size=batch_size)
    console.print(f"wrote {len(predictions.labels)} predictions to {out_file}")


@cli.command()
@click.option("--task", required=True, help="A built-in task name or a task YAML file.")
@click.option("--strategy", required=True, help="The strategy whose settings to tune.")
@click.option("--trials", default=20, show_default=True, type=click.IntRange(min=1),
              help="Finished trials wanted in the study, counting those of earlier runs.")
@click.option("--model", help="Model alias (minilm, smollm2), local folder, GGUF file or Hub id. "
              "Default: the preset's.")
@click.option("--preset", default="quick", show_default=True,
              help="Preset the trials start from (data sizes, the strategy's settings).")
@click.option("--epochs", type=float, help="Fix the epochs (not searched).")
@click.option("--max-train-samples", type=int, help="Training subset size for every trial.")
@click.option("--max-eval-samples", type=int, help="Cap on validation examples.")
@click.option("--precision", type=click.Choice(PRECISIONS))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Fix a setting (not searched): learning_rate=1e-3, lora.r=16.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Training seed of every trial; also seeds the sampler.")
@click.option("--data-dir", envvar="PEFT_ARENA_DATA_DIR", type=click.Path(),
              help="Read DIR/<task>/{train,test}.{jsonl,csv,parquet} instead of the Hub.")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False), help="Default home of the study and preset.")
@click.option("--storage", help="SQLite file (or an Optuna storage URL) of the study. "
              "Default: RESULTS/tune/<task>-<strategy>.db; rerun to resume.")
@click.option("--study-name", help="Default: <task>-<strategy>.")
@click.option("--objective", default="accuracy", show_default=True,
              help="accuracy, or a Pareto search: accuracy,trainable_params or accuracy,time.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False),
              help="Preset file for the best settings. Default: RESULTS/tune/<task>-<strategy>"
              ".yaml.")
def tune(task, strategy, trials, model, preset, epochs, max_train_samples, max_eval_samples,
         precision, sets, seed, data_dir, results_dir, storage, study_name, objective,
         out_file) -> None:
    """Search learning rate, batch size, epochs, weight decay and the strategy's own settings
    on validation accuracy (never the test split), and write the best as a preset."""
    from peft_arena import api
    from peft_arena.tools.tune import fixed_settings, parse_objectives
    from peft_arena.tools.tune import tune as run_search

    objectives = parse_objectives(objective)
    flags = {"epochs": epochs, "max_train_samples": max_train_samples,
             "max_eval_samples": max_eval_samples, "precision": precision}
    [base] = api.plan_cells(tasks=[task], strategies=[strategy], model=model, preset=preset,
                            seeds=[seed], sets=list(sets), flags=flags)
    folder = Path(results_dir) / "tune" / f"{base.task}-{base.strategy}"
    storage = storage or f"{folder}.db"
    out_file = out_file or f"{folder}.yaml"
    console.print(f"[bold]tune {base.task} · {base.strategy}[/]: {trials} trials, study in "
                  f"{storage}")
    try:
        result = run_search(base, trials, fixed=fixed_settings(base.strategy, flags, sets),
                            storage=storage, preset_file=out_file, data_dir=data_dir,
                            study_name=study_name, objectives=objectives,
                            on_trial=_print_trial)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/] Finished trials are kept in the study; run the "
                      "same command again to resume.")
        sys.exit(130)
    _show(_trials_table(result))
    best = result.best
    line = f"best: trial {best.number}, validation accuracy {best.values['accuracy']:.4f}"
    if result.baseline and result.baseline.values:
        gain = best.values["accuracy"] - result.baseline.values["accuracy"]
        line += (f" ({gain:+.4f} over the defaults, trial {result.baseline.number}: "
                 f"{result.baseline.values['accuracy']:.4f})")
    console.print(line)
    console.print("best settings: " + _settings_text(best.settings))
    console.print(f"wrote {result.preset_file}")
    data = f" --data-dir {data_dir}" if data_dir else ""
    console.print(f"Next: peft-arena run --preset {result.preset_file}{data}")


def _settings_text(settings: dict) -> str:
    text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in settings.items())
    return escape(text) or "-"  # module lists print as [...], which is not markup


def _print_trial(row) -> None:
    score = f"validation accuracy {row.values['accuracy']:.4f}" if row.values else row.state
    extra = "  (defaults)" if row.baseline else ""
    console.print(f"  trial {row.number}: {score}{extra}  {_settings_text(row.settings)}")


def _trials_table(result) -> Table:
    table = Table(title=f"study {result.study_name}", box=box.SIMPLE_HEAD)
    for column in ("trial", "state", *result.objectives, "settings"):
        table.add_column(column)
    for row in result.trials:
        values = [f"{row.values[o]:.4g}" if row.values else "-" for o in result.objectives]
        name = f"{row.number}{' *' if row.number == result.best.number else ''}"
        table.add_row(name, row.state + (" (defaults)" if row.baseline else ""), *values,
                      _settings_text(row.settings))
    return table


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def main() -> None:
    try:
        with warnings.catch_warnings():
            # "Skipping a corrupt record" and the like: one line each, no source location.
            warnings.showwarning = _one_line_warning
            cli.main(standalone_mode=False)
    except UserError as exc:
        # Escaped: messages quote user input and install hints like peft-arena[tune].
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(UserError.exit_code)
    except click.exceptions.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
