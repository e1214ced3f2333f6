"""The SQL engine (SQLAlchemy: PostgreSQL, MySQL/MariaDB, SQLite): result backend and beat store."""
