"""Comparison heads for the DOR-IQA benchmark; every head follows the same protocol as ``DORHead``."""
