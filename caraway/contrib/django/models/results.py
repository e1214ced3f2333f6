"""Task and group results as rows, written by the ``django-db`` result backend.

``result`` holds the value encoded with ``result_serializer`` (JSON text by default, base64
for binary serializers, ``content_encoding`` says which), so the admin shows it as it is.
"""

from __future__ import annotations

from django.db import models

from caraway import states

STATE_CHOICES = sorted((state, state) for state in states.ALL_STATES)


class TaskResult(models.Model):
    """One task's outcome (django-celery-results' ``TaskResult``, field for field)."""

    task_id = models.CharField("task id", max_length=255, unique=True)
    task_name = models.CharField("task name", max_length=255, null=True, db_index=True)
    task_args = models.TextField("positional arguments", null=True)
    task_kwargs = models.TextField("keyword arguments", null=True)
    status = models.CharField(
        "state", max_length=50, default=states.PENDING, choices=STATE_CHOICES, db_index=True
    )
    worker = models.CharField(max_length=100, null=True, db_index=True)
    content_type = models.CharField("result content type", max_length=128)
    content_encoding = models.CharField("result encoding", max_length=64)
    result = models.TextField(null=True)
    traceback = models.TextField(null=True, blank=True)
    #: Children, group and parent ids, retries, queue: the rest of Celery's meta, as JSON.
    meta = models.TextField(null=True)
    date_created = models.DateTimeField("created", auto_now_add=True, db_index=True)
    date_done = models.DateTimeField("completed", null=True, db_index=True)

    class Meta:
        verbose_name = "task result"
        ordering = (
            "-date_done",
            "-date_created",
        )

    def __str__(self) -> str:
        return f"<Task: {self.task_id} ({self.status})>"


class GroupResult(models.Model):
    """A saved group (``GroupResult.save()``): its member ids, to restore it by id."""

    group_id = models.CharField("group id", max_length=255, unique=True)
    content_type = models.CharField("result content type", max_length=128)
    content_encoding = models.CharField("result encoding", max_length=64)
    result = models.TextField(null=True)
    date_created = models.DateTimeField("created", auto_now_add=True, db_index=True)
    date_done = models.DateTimeField("completed", null=True, db_index=True)

    class Meta:
        verbose_name = "group result"
        ordering = (
            "-date_done",
            "-date_created",
        )

    def __str__(self) -> str:
        return f"<Group: {self.group_id}>"


class ResultCounter(models.Model):
    """An atomic counter (``Backend.incr``): how many of a group's tasks succeeded."""

    key = models.CharField(max_length=255, unique=True)
    value = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.key} = {self.value}"
