"""Experiments: adversarial protocol, the grid runner, reports and plots."""
