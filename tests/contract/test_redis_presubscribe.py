"""The Redis backend subscribes when a task is sent, so ``get()`` skips a round trip.

Results must still arrive whatever order the sends and waits come in.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from caraway import Caraway, states


def _redis_engine() -> object:
    path = Path(__file__).parent / "factories_redis.py"
    spec = importlib.util.spec_from_file_location("contract_factories_redis_presubscribe", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.redis_engine


def test_results_are_read_in_any_order_after_presubscribed_sends(tmp_path: Path) -> None:
    with _redis_engine()(tmp_path) as (url, options):  # type: ignore[operator]
        app = Caraway("presub", broker="memory://presub", backend=url)
        app.conf.result_backend_transport_options = options
        backend = app.backend
        ids = [f"task-{n}" for n in range(40)]  # more than STALE_PRESUBSCRIPTIONS
        for task_id in ids:
            backend.on_task_call(task_id)
        for n, task_id in enumerate(ids):
            backend.store_result(task_id, n, states.SUCCESS)
        # The last send is still pre-subscribed; the first ones were dropped in bulk.
        for n, task_id in reversed(list(enumerate(ids))):
            assert backend.wait_for(task_id, timeout=5)["result"] == n
        backend.on_task_call("late")
        backend.on_task_call("later")
        backend.store_result("late", "x", states.SUCCESS)
        backend.store_result("later", "y", states.SUCCESS)
        # Waiting for "late" reads past the confirmation of "later", which stays known.
        assert backend.wait_for("late", timeout=5)["result"] == "x"
        assert backend.wait_for("later", timeout=5)["result"] == "y"
        backend.close()
