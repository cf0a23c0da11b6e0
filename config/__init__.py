"""Settings and logging set-up: the first things a process loads, and nothing else."""
