"""Unlearning methods behind the Unlearner contract."""
