"""``apply_async(connection=django.db.connection)`` on the PostgreSQL broker: the message is
written in the ``transaction.atomic()`` block, seen by the broker only once it commits, and
never after a rollback. Django runs in a subprocess (see ``django_support``)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
from django_support import WAIT, requires_django
from services import require

_SCRIPT = """
import sys
import django
from django.conf import settings

url, schema = sys.argv[1], sys.argv[2]
settings.configure(DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": sys.argv[3],
    "NAME": "test", "USER": "postgres"}})
django.setup()
from django.db import connection, transaction
from caraway import Caraway

app = Caraway("djtx", broker=url, broker_transport_options={"schema": schema},
              set_as_current=False)
app.broker.declare("celery")  # the tables, before any transaction of Django's
add = app.task(name="djtx.add")(lambda x, y: x + y)

with transaction.atomic():
    add.apply_async((1, 2), connection=connection)
    print("inside", app.broker.size("celery"))
print("committed", app.broker.size("celery"))

try:
    with transaction.atomic():
        add.apply_async((3, 4), connection=connection)
        raise RuntimeError("roll back")
except RuntimeError:
    pass
print("rolled back", app.broker.size("celery"))
app.close()
"""


@requires_django
def test_a_task_sent_with_djangos_connection_follows_its_transaction() -> None:
    _, port = require("postgresql")
    url = f"postgresql://postgres@127.0.0.1:{port}/test"
    schema = f"djtx_{uuid.uuid4().hex[:10]}"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, url, schema, str(port)],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["inside 0", "committed 1", "rolled back 1"]
