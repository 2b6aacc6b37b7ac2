"""Training runs: the Lightning Trainer set-up and fit-and-save (trainer), checkpoint writes and run records
(safety), the run lock, --time-budget, devices and precisions (hardware, distributed, memory_format)."""
