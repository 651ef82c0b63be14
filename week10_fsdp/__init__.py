"""Week 10: FSDP2 and distributed checkpoints."""
