"""Training: pure losses and the one training loop."""
