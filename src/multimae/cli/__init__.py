"""Command-line interface: one entry point (`multimae`), one module per sub-command."""
