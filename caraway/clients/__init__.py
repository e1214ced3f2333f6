"""Client plumbing shared by a broker and a backend of the same kind (URL parsing, connections)."""
