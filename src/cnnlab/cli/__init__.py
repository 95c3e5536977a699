"""The `cnnlab` command line: one module per command group; each parses, calls the core and prints."""
from cnnlab.cli.commands import main

__all__ = ["main"]
