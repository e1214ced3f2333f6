"""The Django app behind ``"caraway.contrib.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class CarawayDjangoConfig(AppConfig):
    name = "caraway.contrib.django"
    #: Tables are ``caraway_django_*``: beside django_celery_results/_beat, never over them.
    label = "caraway_django"
    verbose_name = "Caraway tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Lazy, a Django app connects its signal handlers once the models are loaded.
        from caraway.contrib.django import changes

        changes.connect()
