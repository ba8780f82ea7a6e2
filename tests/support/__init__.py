"""Shared test data and helpers (hand-written events, tiny models, repository paths); fixtures live in ``tests/conftest.py``."""
