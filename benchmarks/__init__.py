"""Benchmark commands: each prints a Markdown table and the command that produced it."""
