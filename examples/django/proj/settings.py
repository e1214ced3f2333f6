"""Settings of the example: SQLite files beside it by default, PostgreSQL when
``POSTGRES_DB`` names a database (``POSTGRES_HOST``, ``POSTGRES_PORT``, ``POSTGRES_USER``
optional). The tests set ``EXAMPLE_DIR`` to keep every file out of the source tree."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("EXAMPLE_DIR", BASE_DIR))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "caraway.contrib.django",  # results, periodic tasks and their admin pages
    "orders",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "proj.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

if os.environ.get("POSTGRES_DB"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["POSTGRES_DB"],
            "HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
            "PORT": os.environ.get("POSTGRES_PORT", "5432"),
            "USER": os.environ.get("POSTGRES_USER", "postgres"),
        }
    }
else:
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}
    }

# --- caraway, configured as Celery is (CELERY_ names, read by proj/celery.py) -------------
# The broker: an embedded SQLite file here; "redis://..." or "amqp://..." in production.
CELERY_BROKER_URL = os.environ.get("BROKER_URL", f"sqlite:///{DATA_DIR / 'broker.sqlite3'}")
# Results as rows of the Django database, listed in the admin (django-celery-results' name).
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True  # keep each task's arguments with its result
# Periodic tasks from the Django database, edited in the admin (django-celery-beat's name).
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Written to the database when beat starts, so the admin lists it beside the ones added there.
CELERY_BEAT_SCHEDULE = {
    "tally-orders": {
        "task": "orders.tasks.tally_orders",
        "schedule": float(os.environ.get("TALLY_EVERY", "60")),
    },
}
