"""Fast in-process tests: plain functions and classes, no processes, milliseconds each."""
