"""The SQLite engine: broker, backend, broadcast and beat store in one local database file."""
