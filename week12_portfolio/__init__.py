"""Week 12: the portfolio. The flagship pipeline end to end (pre-train -> SFT -> LoRA -> DPO -> serve), RESULTS
generated from the registry, REPRODUCE with a timed cold-start drill, TALK, a 40-question Q&A whose citations
resolve, a browsable docs site, and the release."""
