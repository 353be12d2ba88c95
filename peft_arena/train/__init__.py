"""Training a cell's model: the loop, optimizer, early stopping, precision, distributed runs,
trackers, memory tools and the memory estimate."""
