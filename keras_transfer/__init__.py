"""Train one net of the transfer grid; grid, report and analysis tools."""
__version__ = "0.1.0"
