"""Django support: the fixup a Django project gets by itself, ``DjangoTask``, and (with
``"caraway.contrib.django"`` in ``INSTALLED_APPS``) results in the Django database
(``result_backend = "django-db"``), periodic tasks edited in the admin (``caraway beat -S
django``) and their admin pages (``pip install "caraway[django]"``).

This package stays free of imports: a Django project lists it in ``INSTALLED_APPS`` and Django
imports it before its app registry is ready, so nothing here may touch models or settings.
"""
