"""Stacks: one per Azure environment."""
