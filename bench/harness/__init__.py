"""Modules of the benchmark harness (see bench/run.py)."""
