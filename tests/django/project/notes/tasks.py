"""Tasks that use models: importing this module needs Django's app registry to be ready."""

import os
import threading

from caraway import shared_task

from .models import Note


@shared_task
def create_note(text):
    return Note.objects.create(text=text).pk


@shared_task
def mark_seen(pk):
    seen_by = f"{os.getpid()}/{threading.get_ident()}"
    return Note.objects.filter(pk=pk).update(seen_by=seen_by)


@shared_task
def count_notes(alias="default"):
    return Note.objects.using(alias).count()
