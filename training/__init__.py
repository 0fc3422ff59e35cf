"""Training tools (not installed with the runtime package)."""
