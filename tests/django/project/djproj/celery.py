"""Celery's documented ``proj/celery.py``, with ``celery`` changed to ``caraway`` and no more."""

import os

from caraway import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")

app = Celery("djproj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
