"""Brokers: where task messages wait. Each engine fills in ``caraway.brokers.base.Broker``."""
