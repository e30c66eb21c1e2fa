"""`make bench`: statefulmcp side by side with what a user would pick instead, in one run.

Each figure group is one module with `run(quick) -> dict`; `__main__` runs them in order, then
writes the table, `results/latest.json` and `docs/benchmarks.md`. Numbers are medians, p99s and
ratios from interleaved runs; nothing here is a pass/fail test.
"""
