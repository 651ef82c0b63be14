"""Week 2: one entrypoint for 1 process or N (DDP), AMP, gradient accumulation, profiling."""
