"""Sends tasks with ``delay_on_commit`` / ``apply_async_on_commit`` inside transactions that
commit or roll back; prints, as JSON, what each call returned and every message published
(its task's arguments, and whether a transaction was still open at the time)."""

import json
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")
django.setup()

from django.db import connection, transaction  # noqa: E402
from notes.models import Note  # noqa: E402
from notes.tasks import mark_seen  # noqa: E402

from caraway import signals  # noqa: E402
from caraway.contrib.django.task import DjangoTask  # noqa: E402

published = []


@signals.after_task_publish.connect
def record(headers=None, body=None, **_):
    published.append({"args": list(body[0]), "in_transaction": connection.in_atomic_block})


class Rollback(Exception):
    pass


returned = {}
try:
    with transaction.atomic():
        rolled_back = Note.objects.create(text="rolled back")
        returned["rolled back"] = mark_seen.delay_on_commit(rolled_back.pk)
        raise Rollback
except Rollback:
    pass
with transaction.atomic():
    committed = Note.objects.create(text="committed")
    returned["committed"] = mark_seen.delay_on_commit(committed.pk)
    sent_before_commit = len(published)
with transaction.atomic():
    by_apply_async = Note.objects.create(text="apply_async_on_commit")
    returned["apply_async"] = mark_seen.apply_async_on_commit((by_apply_async.pk,), countdown=0)
outside = Note.objects.create(text="outside a transaction")
returned["outside"] = mark_seen.delay_on_commit(outside.pk)
print(
    json.dumps(
        {
            "returned": returned,
            "published": published,
            "sent_before_commit": sent_before_commit,
            "pks": {
                "rolled back": rolled_back.pk,
                "committed": committed.pk,
                "apply_async": by_apply_async.pk,
                "outside": outside.pk,
            },
            "is_django_task": isinstance(mark_seen._get_current_object(), DjangoTask),
        }
    )
)
