"""What a model's architecture decides: where its classification head is, and which of its
modules an adapter targets. Read from the model or its config, never from a fixed name list."""
