"""Analysing a store: paired comparisons, statistics, the health check, tables, plots and the report."""
