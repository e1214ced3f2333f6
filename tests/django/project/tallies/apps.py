from django.apps import AppConfig


class TalliesConfig(AppConfig):
    name = "tallies"
    verbose_name = "Tallies, installed by AppConfig path"
