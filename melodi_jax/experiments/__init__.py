"""Issue 7's experiments: evaluating finished runs, the recall scorer, reports and plots, and the
memory-usage diagnostic. The launch scripts live in launch/experiments/."""
