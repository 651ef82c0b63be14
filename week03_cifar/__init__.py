"""Week 3: CIFAR-10 baseline, four ablations, error analysis and a 94% speed track."""
