"""Week 7: supervised fine-tuning with a response-only loss, checked against TRL; the eval harness."""
