"""Onboarding a use case: scaffold a new flow (`genaiops new-flow`) and the path filters that
decide which flows a change touches (`genaiops flow-changed`, used by the pipelines)."""
