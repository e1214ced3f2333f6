"""Settings of the test project; the tests choose the databases and the broker by environment.

``DJPROJ_DATABASES``: Django's ``DATABASES`` as JSON. ``DJPROJ_BROKER``: the broker and result
backend URL (an embedded SQLite file).
"""

import json
import os

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "notes",
    "tallies.apps.TalliesConfig",  # an AppConfig path: autodiscovery must still find tallies.tasks
]
DATABASES = json.loads(os.environ["DJPROJ_DATABASES"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_BROKER_URL = os.environ["DJPROJ_BROKER"]
CELERY_RESULT_BACKEND = os.environ["DJPROJ_BROKER"]
