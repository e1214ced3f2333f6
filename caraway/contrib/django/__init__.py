"""Django support: the fixup a Django project gets by itself, and ``DjangoTask``.

This package stays free of imports: a Django project lists it in ``INSTALLED_APPS`` and Django
imports it before its app registry is ready, so nothing here may touch models or settings.
"""
