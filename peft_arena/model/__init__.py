"""The model of a cell: loading it, what its architecture decides (where its classification head
is, which modules an adapter targets), its padding, 4-bit weights, saving, and the speed-ups
applied to it before training."""
