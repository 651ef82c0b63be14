"""Week 1: the scaffold. Softmax regression on MNIST with the project's training stack."""
