"""The Redis engine: client plumbing, broker, backend, broadcast, beat store and chord join."""
