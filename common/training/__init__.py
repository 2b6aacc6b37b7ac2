"""Training runs: the Lightning Trainer set-up and fit-and-save (trainer, options), atomic checkpoint writes
(checkpoint_io), the stop on non-finite loss (nonfinite), the saved config and log flushes (callbacks), the run lock,
--time-budget, devices and precisions (hardware, distributed, memory_format)."""
