"""Redis Cluster: the Redis engine's broker and backend with keys placed by hash slot."""
