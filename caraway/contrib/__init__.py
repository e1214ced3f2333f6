"""Integrations that sit on top of caraway: the pytest plugin and testing helpers."""
