"""Opens a database connection, forks, queries in the child, then again in the parent; prints,
as JSON, the server process behind each query (a prefork worker's parent and child)."""

import json
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")
django.setup()

from django.db import connection  # noqa: E402

from caraway.contrib.django.fixup import install_worker_hooks  # noqa: E402


def backend_pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


install_worker_hooks()  # what a worker does at boot, before it forks its children
before = backend_pid()
reader, writer = os.pipe()
child = os.fork()
if child == 0:
    os.close(reader)
    os.write(writer, str(backend_pid()).encode())
    os._exit(0)
os.close(writer)
in_child = int(os.read(reader, 64))
os.waitpid(child, 0)
print(json.dumps({"before": before, "child": in_child, "after": backend_pid()}))
