"""The PostgreSQL engine: a broker with transactional enqueue, and broadcast by NOTIFY."""
