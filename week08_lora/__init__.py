"""Week 8: LoRA and QLoRA by hand, checked against peft and bitsandbytes; full FT vs LoRA vs QLoRA measured."""
