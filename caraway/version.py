"""The package version, in a module of its own so modules below the root can read it without
importing the whole public API."""

__version__ = "0.1.0"
