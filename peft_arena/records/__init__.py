"""The record of one cell: its schema (schema), how each kind is made (builders), and where
it lives on disk (store)."""
