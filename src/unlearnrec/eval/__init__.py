"""Evaluation: full-ranking top-k metrics and membership-inference forgetting metrics."""
