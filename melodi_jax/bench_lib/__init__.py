"""Helpers shared by the measurement entry points (footprint.py, bench.py)."""
