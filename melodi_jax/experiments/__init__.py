"""Experiments on trained runs: evaluating finished runs, the recall scorer, the memory-usage
diagnostic, the copy probe, and the reports and plots (report.py: compare_small and recall;
report_medium.py; memory_recall/). The launch scripts live in launch/experiments/."""
