"""The pytest plugin, exercised the way users meet it: test files run by an inner pytest."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester whose runs are as strict as ours: unknown markers and warnings fail."""
    pytester.makeini(
        """
        [pytest]
        addopts = --strict-markers -p no:cacheprovider
        filterwarnings = error
        timeout = 30
        """
    )
    return pytester


def test_celery_app_and_celery_worker_run_tasks(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from caraway import current_app


        def test_a_task_defined_in_the_test(celery_app, celery_worker):
            @celery_app.task
            def mul(x, y):
                return x * y

            celery_worker.reload()
            assert mul.delay(4, 4).get(timeout=10) == 16


        def test_each_test_gets_a_fresh_current_app(celery_app, celery_worker):
            assert current_app.main == celery_app.main == "caraway.tests"
            assert "test_celery_app_and_celery_worker_run_tasks.mul" not in celery_app.tasks
            assert celery_app.conf.broker_url == "memory://"
            assert celery_app.conf.result_backend == "cache+memory://"
            assert celery_worker.pool_name == "solo"
        """
    )

    result = inner.runpytest_inprocess()

    result.assert_outcomes(passed=2)


def test_celery_config_and_the_celery_marker_configure_the_app(inner: pytest.Pytester) -> None:
    results_db = inner.path / "results.db"
    inner.makepyfile(
        f"""
        import pytest


        @pytest.fixture(scope="session")
        def celery_config():
            return {{"task_default_queue": "from-config", "task_default_priority": 3}}


        @pytest.fixture(scope="session")
        def celery_worker_parameters():
            return {{"queues": ["from-marker"]}}


        def test_config(celery_app):
            assert celery_app.conf.task_default_queue == "from-config"
            assert celery_app.conf.task_default_priority == 3


        @pytest.mark.celery(
            task_default_queue="from-marker", result_backend="sqlite:///{results_db}"
        )
        def test_marker_wins_over_config(celery_app, celery_worker):
            assert celery_app.conf.task_default_queue == "from-marker"
            assert celery_app.conf.task_default_priority == 3

            @celery_app.task
            def hello(name):
                return "hello " + name

            assert hello.delay("sqlite").get(timeout=10) == "hello sqlite"
        """
    )

    result = inner.runpytest_inprocess()

    result.assert_outcomes(passed=2)
    assert results_db.exists()


def test_the_marker_is_declared(inner: pytest.Pytester) -> None:
    result = inner.runpytest_inprocess("--markers")

    assert result.ret == 0
    result.stdout.fnmatch_lines(["@pytest.mark.celery(**overrides):*"])


def test_session_fixtures_share_one_app_and_one_worker(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        session_tasks="""
        from caraway import shared_task


        @shared_task
        def add(x, y):
            return x + y
        """,
        conftest="""
        import pytest

        from caraway import Task


        class Hello(Task):
            name = "session.hello"

            def run(self, name):
                return "hello " + name


        @pytest.fixture(scope="session")
        def celery_includes():
            return ["session_tasks"]


        @pytest.fixture(scope="session")
        def celery_class_tasks():
            return [Hello]
        """,
        test_session="""
        seen = []


        def test_first(celery_session_app, celery_session_worker):
            from session_tasks import add

            seen.append((celery_session_app, celery_session_worker))
            assert add.delay(1, 2).get(timeout=10) == 3


        def test_second(celery_session_app, celery_session_worker):
            assert seen == [(celery_session_app, celery_session_worker)]
            hello = celery_session_app.tasks["session.hello"]
            assert hello.delay("session").get(timeout=10) == "hello session"
            assert celery_session_worker.ready.is_set()
        """,
    )

    # In a subprocess: shared_task declarations last for the life of the process.
    result = inner.runpytest_subprocess()

    result.assert_outcomes(passed=2)


def test_session_and_function_workers_mix_with_separate_stores(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest


        def test_session(celery_session_app, celery_session_worker):
            assert celery_session_app.tasks["celery.ping"].delay().get(timeout=10) == "pong"


        @pytest.mark.celery(broker_url="memory://function-tests")
        def test_function(celery_app, celery_worker):
            @celery_app.task
            def double(x):
                return 2 * x

            assert [double.delay(i).get(timeout=10) for i in range(3)] == [0, 2, 4]
        """
    )

    result = inner.runpytest_inprocess()

    result.assert_outcomes(passed=2)


def test_the_app_trap_and_depends_on_current_app(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        from caraway import current_app


        @pytest.fixture(scope="session")
        def use_celery_app_trap():
            return True


        def test_current_app_is_trapped(celery_app):
            with pytest.raises(RuntimeError, match="Test depends on current_app"):
                current_app.conf


        def test_depends_on_current_app_lifts_the_trap(celery_app, depends_on_current_app):
            assert current_app.conf is celery_app.conf
        """
    )

    result = inner.runpytest_inprocess()

    result.assert_outcomes(passed=2)


def test_loading_the_plugin_starts_nothing(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import sys
        import threading


        def test_nothing_heavy_was_imported(request):
            assert request.config.pluginmanager.has_plugin("caraway")
            loaded = {"caraway.worker.worker", "caraway.engines.memory.broker", "sqlite3"}
            assert not loaded & set(sys.modules)
            assert [t.name for t in threading.enumerate()] == ["MainThread"]
        """
    )

    result = inner.runpytest_subprocess()

    result.assert_outcomes(passed=1)
