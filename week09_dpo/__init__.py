"""Week 9: Direct Preference Optimization on week 8's model, the loss written by hand and checked against TRL."""
