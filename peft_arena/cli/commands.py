"""The `peft-arena` command: each command builds one request from its options and makes one
call into the library API (peft_arena.api); here it only parses, shows progress and prints."""

from __future__ import annotations

import sys
import warnings

import click
from rich.markup import escape

from peft_arena import api
from peft_arena.cli import options
from peft_arena.cli.output import (
    RunLog,
    console,
    err_console,
    memory_table,
    plan_table,
    print_event,
    print_summary,
    print_trial,
    settings_text,
    show,
    trials_table,
)
from peft_arena.common.errors import UserError


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
@options.model()
@options.preset()
@click.option("--seeds", help="Seeds, comma-separated. Default: the preset's.")
@options.epochs()
@options.max_train_samples()
@options.max_eval_samples()
@options.precision("Arithmetic precision (default auto: bf16 where the hardware has it).")
@options.data_dir()
@options.results("Folder for records and reports.")
@options.sets("Override a setting: learning_rate=1e-3 for all, lora.r=16 for one strategy.")
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
              type=click.Choice(list(api.EARLY_STOPPING_METRICS)),
              help="What early stopping watches (default val_accuracy).")
@click.option("--max-trainable-params", metavar="N",
              help="Skip every cell with more trainable parameters (1M, 500K or 1000000), "
              "counted before any training.")
@click.option("--save-model", is_flag=True, help="Keep each cell's trained adapter (or model) "
              "in RESULTS/models/<cell id>/ for `peft-arena export`.")
@click.option("--tracker", type=click.Choice(api.TRACKERS),
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
@click.option("--tune-trials", type=int, metavar="N",
              help="Give every strategy the same N-trial search (learning rate and its main "
              "knob) on the validation split, then run its best settings on the test split "
              "beside its defaults (needs the tune extra).")
def run(tasks, strategies, model, preset, seeds, epochs, max_train_samples, max_eval_samples,
        precision, data_dir, results_dir, sets, retry_failed, trust_remote_code,
        dry_run, eval_every, early_stopping_patience, early_stopping_metric,
        max_trainable_params, save_model, tracker, executor_name, workers, ray_address,
        slurm_partition, slurm_time, slurm_gpus, slurm_cpus, slurm_mem, slurm_account,
        slurm_cluster, tune_trials) -> None:
    """Run every task x strategy x seed cell that has no record yet.

    Exit status: 0 all cells recorded ok (or left to another run), 1 some cells failed,
    2 bad input (nothing is run), 130 interrupted (run the same command again to resume).
    """
    request = api.RunRequest(
        matrix=api.MatrixRequest(
            tasks=_listed(tasks, "--matrix", "banking77"),
            strategies=_listed(strategies, "--strategies", "lora"), model=model,
            preset=preset, seeds=_seeds(seeds), sets=list(sets),
            flags={"epochs": epochs, "max_train_samples": max_train_samples,
                   "max_eval_samples": max_eval_samples, "precision": precision,
                   "eval_every": eval_every, "early_stopping_patience": early_stopping_patience,
                   "early_stopping_metric": early_stopping_metric, "tracker": tracker,
                   "save_model": save_model or None}),
        results_dir=results_dir, data_dir=data_dir, retry_failed=retry_failed,
        trust_remote_code=trust_remote_code, max_trainable_params=max_trainable_params,
        executor_name=executor_name, workers=workers, ray_address=ray_address,
        slurm={"partition": slurm_partition, "time_min": slurm_time,
               "gpus_per_cell": slurm_gpus, "cpus_per_cell": slurm_cpus, "mem_gb": slurm_mem,
               "account": slurm_account, "cluster": slurm_cluster},
        tune_trials=tune_trials)
    if dry_run:
        planned = api.dry_run(request)
        show(plan_table(planned.cells, planned.counts),
             memory_table(planned.cells, planned.estimates))
        return
    log = RunLog()
    result = api.run_request(
        request, on_start=_print_start,
        on_event=lambda *event: print_event(*event, log=log))
    print_summary(result, results_dir)
    if result.interrupted:
        sys.exit(130)
    if result.failed:
        sys.exit(1)


def _print_start(planned: api.Planned) -> None:
    executor = planned.executor
    where = executor.name + (f", {executor.workers} at once" if executor.workers > 1 else "")
    console.print(f"[bold]{len(planned.cells)} cells[/] -> {planned.results_dir}/records "
                  f"({where})")


@cli.command()
@options.results("Folder with the records.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where to write the report (default: the results folder).")
@click.option("--confusion", is_flag=True,
              help="Also draw a confusion matrix per task and strategy (charts/confusion/).")
@click.option("--chart-links/--no-chart-links", default=True, show_default=True,
              help="List the charts in leaderboard.md; leave them out where the files cannot "
              "be shown, such as a pull-request comment (report.html embeds them either way).")
def report(results_dir: str, out_dir: str | None, confusion: bool, chart_links: bool) -> None:
    """Write the leaderboard (markdown), report.html, CSV and charts, and print the table."""
    result = api.report(api.ReportRequest(results_dir, out_dir, confusion=confusion,
                                          chart_links=chart_links))
    show(api.summary_table(result.summary))
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
    compared = api.compare(api.CompareRequest(
        base, head, accuracy=threshold_accuracy, macro_f1=threshold_f1, time=threshold_time,
        memory=threshold_memory, out_file=out_file))
    show(compared.table)
    for note in compared.comparison.notes:
        console.print(f"[yellow]note:[/] {note}")
    if compared.written:
        console.print(f"wrote {out_file}")
    if fail_on_regression and compared.comparison.has_regression:
        sys.exit(1)


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True,
              help="Print strategies (with the model families each applies to), tasks, presets "
                   "and the methods that do not apply, as JSON.")
def list_command(as_json: bool) -> None:
    """Show the strategies and tasks with their defaults."""
    from rich.markup import escape
    from rich.table import Table

    listing = api.listing()
    if as_json:
        import json

        click.echo(json.dumps(listing.as_dict(), indent=2))
        return
    strategies = Table(title="strategies")
    for column in ("name", "what", "learning rate", "families", "PEFT defaults"):
        strategies.add_column(column)
    for info in listing.strategies:
        strategies.add_row(info["name"], info["summary"], f"{info['learning_rate']:g}",
                           ", ".join(info["families"]), info["peft_defaults"])
    inapplicable = Table(title="methods that do not apply")
    for column in ("name", "where", "why"):
        inapplicable.add_column(column)
    for info in listing.does_not_apply:
        inapplicable.add_row(info["name"], ", ".join(info["families"]) or "any classifier",
                             escape(info["reason"]))
    tasks = Table(title="tasks")
    for column in ("name", "kind", "labels", "max length", "Hub source"):
        tasks.add_column(column)
    for info in listing.tasks:
        tasks.add_row(info["name"], info["kind"], str(info["labels"]), str(info["max_length"]),
                      info["hub"])
    show(strategies, inapplicable, tasks)
    console.print(f"presets: {', '.join(listing.presets)}")


@cli.command()
@click.argument("record", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the model to (new or empty).")
@click.option("--merge", is_flag=True, help="Fold the adapter into the base model: a plain "
              "transformers model (QLoRA: into a de-quantized full-precision copy of the base).")
def export(record: str, out_dir: str, merge: bool) -> None:
    """Export a cell run with --save-model: its adapter in PEFT format, or a merged model,
    with the tokenizer and the label names."""
    kind = api.export(api.ExportRequest(record, out_dir, merge=merge))
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
    predictions = api.predict(api.PredictRequest(
        model_dir, input_file, out_file, text_column=text_column, id_column=id_column,
        with_names=with_names, batch_size=batch_size))
    console.print(f"wrote {len(predictions.labels)} predictions to {out_file}")


@cli.command()
@click.option("--task", required=True, help="A built-in task name or a task YAML file.")
@click.option("--strategy", required=True, help="The strategy whose settings to tune.")
@click.option("--trials", default=20, show_default=True, type=click.IntRange(min=1),
              help="Finished trials wanted in the study, counting those of earlier runs.")
@options.model()
@options.preset("Preset the trials start from (data sizes, the strategy's settings).")
@options.epochs("Fix the epochs (not searched).")
@options.max_train_samples("Training subset size for every trial.")
@options.max_eval_samples("Cap on validation examples.")
@options.precision()
@options.sets("Fix a setting (not searched): learning_rate=1e-3, lora.r=16.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Training seed of every trial; also seeds the sampler.")
@options.data_dir("Read DIR/<task>/{train,test}.{jsonl,csv,parquet} instead of the Hub.")
@options.results("Default home of the study and preset.")
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
    request = api.TuneRequest(
        task, strategy, trials, model=model, preset=preset, seed=seed,
        flags={"epochs": epochs, "max_train_samples": max_train_samples,
               "max_eval_samples": max_eval_samples, "precision": precision},
        sets=list(sets), data_dir=data_dir, results_dir=results_dir, storage=storage,
        study_name=study_name, objective=objective, out_file=out_file)
    try:
        result = api.tune(request, on_trial=print_trial, on_start=_print_tune_start)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/] Finished trials are kept in the study; run the "
                      "same command again to resume.")
        sys.exit(130)
    show(trials_table(result))
    best = result.best
    line = f"best: trial {best.number}, validation accuracy {best.values['accuracy']:.4f}"
    if result.gain_over_defaults is not None:
        line += (f" ({result.gain_over_defaults:+.4f} over the defaults, trial "
                 f"{result.baseline.number}: {result.baseline.values['accuracy']:.4f})")
    console.print(line)
    console.print("best settings: " + settings_text(best.settings))
    console.print(f"wrote {result.preset_file}")
    data = f" --data-dir {data_dir}" if data_dir else ""
    console.print(f"Next: peft-arena run --preset {result.preset_file}{data}")


def _print_tune_start(start: api.TuneStart) -> None:
    console.print(f"[bold]tune {start.base.task} · {start.base.strategy}[/]: {start.trials} "
                  f"trials, study in {start.storage}")


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
