"""The built-in dashboard: a web UI over the events stream, and Flower's HTTP API.

``caraway -A proj dashboard`` (or ``caraway -A proj flower``) serves it; it needs the extra
``pip install "caraway[dashboard]"``.
"""
