"""LLaMA Lab experiments: the CLI, run records, sweeps, scaling fits and benchmarks."""
