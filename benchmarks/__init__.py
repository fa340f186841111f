"""usseg.benchmarks: pytest-benchmark suite, the seed-style baseline and the usseg-bench report."""
