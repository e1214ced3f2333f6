"""Django integration: add ``"caraway.contrib.django"`` to ``INSTALLED_APPS`` for task results
in the Django database (``result_backend = "django-db"``), periodic tasks edited in the admin
(``caraway beat -S django``), and their admin pages (``pip install "caraway[django]"``)."""
