"""The in-process engine: broker, backend, broadcast and beat store in memory, for tests."""
