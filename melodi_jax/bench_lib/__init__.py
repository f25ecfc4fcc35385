"""Helpers of bench.py: the trainer's step on a synthetic batch, FLOP counting, roofline, profile,
report."""
