"""Benchmark suites: every module here is imported by `bench.run` and registers benchmarks
with `bench.registry.benchmark`."""
