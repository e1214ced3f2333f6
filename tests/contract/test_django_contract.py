"""The backend and beat store contract suites on the Django database (``django-db`` and
``caraway beat -S django``), on SQLite and PostgreSQL.

Django's settings hold for a whole process, so each database gets a pytest process of its
own that runs the two suites with only the Django engine (``factories_django.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from importlib.util import find_spec
from pathlib import Path

import pytest
from services import postgresql_database

#: Found, not imported: importing Django here would load it for every test of the session.
pytestmark = pytest.mark.skipif(
    find_spec("django") is None, reason="Django is not installed (the test extra has it)"
)

HERE = Path(__file__).resolve().parent
SUITES = ["test_backend_contract.py", "test_beat_store_contract.py"]
#: The suites' own threads (racing beats, a timer that stores a result) end without closing
#: their Django connection (Django closes one only at the end of a request, and caraway's
#: worker before and after each task); PostgreSQL's driver then warns when it is collected.
UNCLOSED_IN_SUITE_THREADS = "ignore:<psycopg.Connection object:ResourceWarning"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_contract_suites_pass_on_the_django_database(database: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        if database == "sqlite":
            spec = f"sqlite:{tmp_path / 'contract.sqlite3'}"
        else:
            spec = f"postgresql:{stack.enter_context(postgresql_database('caraway_contract'))}"
        env = {**os.environ, "CARAWAY_CONTRACT_DJANGO": spec, "PYTHONDONTWRITEBYTECODE": "1"}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", *SUITES, "-q", "-p", "no:cacheprovider",
             "-k", "django", "-x", "-W", UNCLOSED_IN_SUITE_THREADS],
            cwd=HERE, env=env, capture_output=True, text=True, timeout=230,
        )  # fmt: skip

    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in summary, summary
    assert "skipped" not in summary, summary
