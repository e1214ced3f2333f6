"""Celery's documented ``proj/celery.py``, with ``celery`` changed to ``caraway``."""

import os

from caraway import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
# Every setting named CELERY_* in settings.py configures the app.
app.config_from_object("django.conf:settings", namespace="CELERY")
# Finds tasks.py in every installed app.
app.autodiscover_tasks()
