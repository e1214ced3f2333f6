"""``worker_deduplicate_successful_tasks``: a late-ack task whose worker died after storing
SUCCESS but before the ack is redelivered; with the setting on, the next worker acks it
without running it again (Celery's documented behaviour); with it off, it runs twice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from worker_support import WAIT, WorkerProject, wait_until

SOURCE = """
import json
import os
import signal
import time
from pathlib import Path

from caraway import Celery, signals

HERE = Path(__file__).resolve().parent
app = Celery(
    "dedupproj",
    broker=f"sqlite:///{HERE}/b.sqlite3",
    broker_transport_options={"visibility_timeout": 1},
    worker_deduplicate_successful_tasks=os.environ.get("DEDUP") == "1",
)


@app.task(name="dedup.once", acks_late=True)
def once(key):
    marks = HERE / "marks"
    marks.mkdir(exist_ok=True)
    with open(marks / key, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "at": time.time()}) + "\\n")
    return "done"


@signals.task_postrun.connect
def die_after_storing(sender=None, **kwargs):
    # The result is stored by now, the message not yet acked: the worst moment to die.
    if sender.name == "dedup.once" and os.environ.get("DIE_AFTER_STORING") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize(("deduplicate", "runs"), [("1", 1), ("0", 2)], ids=["on", "off"])
def test_a_redelivered_task_already_successful_runs_again_only_without_the_setting(
    tmp_path: Path, deduplicate: str, runs: int
) -> None:
    project = WorkerProject(tmp_path, SOURCE)
    try:
        first = project.spawn(DEDUP=deduplicate, DIE_AFTER_STORING="1")
        project.ping()
        result = project.tasks.once.delay("k")
        assert first.wait(WAIT) == -signal.SIGKILL
        assert result.get(timeout=WAIT) == "done"  # stored before the worker died
        assert project.messages_in_file() == 1  # ... and never acked

        project.spawn(DEDUP=deduplicate)
        wait_until(lambda: project.messages_in_file() == 0, what="the redelivery to settle")

        assert len(project.marks("k")) == runs
        assert result.state == "SUCCESS"
        skipped = "already completed successfully" in project.log(1)
        assert skipped is (deduplicate == "1")
    finally:
        project.close()
        project.app.close()
