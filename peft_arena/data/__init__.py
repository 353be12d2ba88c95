"""A cell's data: reading task files, row checks, splits, hygiene counts, tokenized
batches and the probe texts that retention measures on."""
