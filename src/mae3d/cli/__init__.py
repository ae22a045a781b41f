"""Command-line interface: argument parsing only; every command calls a stage's Python API."""
