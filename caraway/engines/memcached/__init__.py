"""The memcached engine (pymemcache): a result backend, as Celery's ``cache+memcached://``."""
