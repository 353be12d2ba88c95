"""Small helpers every layer shares: atomic writes, the user-error type, library logs,
nested lookups, progress output and the CPU feature flags."""
