"""The worker: consumes messages, runs tasks in a pool, stores results, acks.

``worker.Worker`` boots the parts in order: ``consumer`` (prefetch, ack policy, holds),
``job`` (one message bound to its task), ``caraway.execution`` (one call), ``pools``.
"""
