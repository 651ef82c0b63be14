"""Evaluation harnesses over any causal LM: greedy generation and the instruction-following scores (week 7 on)."""
