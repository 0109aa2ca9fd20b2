"""Agents: one module per algorithm, all in the escape harness (``harness.py``)."""
