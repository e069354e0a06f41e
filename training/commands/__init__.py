"""Command-line entry points: argument parsing and one-line errors, one module per command."""
