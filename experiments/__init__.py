"""Experiments around the engine: sweep definitions and benchmarks (each a subpackage)."""
