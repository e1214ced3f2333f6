"""Compatibility measurements run against caraway (never imported by the package)."""
