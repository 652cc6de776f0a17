"""Benchmarks (see DESIGN.md, Speed): run as scripts, never as timed tests."""
