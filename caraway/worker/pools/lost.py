"""How a task ends when its prefork child never answered: killed at the hard time limit,
terminated by a revoke, stopped by a cold shutdown, or lost (Celery's ``WorkerLostError``).

The supervisor settles these for the child, which cannot: it stores the failure and says
whether the message goes back to the queue.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

from caraway import signals, states
from caraway.exceptions import Reject, TaskRevokedError, Terminated, WorkerLostError
from caraway.execution import Outcome

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.worker.job import Job

logger = logging.getLogger("caraway.worker")


def stopped_cold(app: Caraway, job: Job) -> Outcome:
    """The cold shutdown killed its child: an acks_late message goes back to the queue
    (Celery's cancel of unacked requests); an early-acked one is lost, and fails."""
    exc = WorkerLostError("Worker exited prematurely: cold shutdown.")
    if job.acks_late:
        logger.warning("Requeued %s: stopped by the cold shutdown", job.describe())
        requeue = Reject("cold shutdown", requeue=True)
        return Outcome(states.FAILURE, None, reject=requeue, ended_by=exc)
    logger.error("%s: %s (acked before it ran: not requeued)", job.describe(), exc)
    return failed(app, job, exc)


def terminated(app: Caraway, job: Job, signum: int) -> Outcome:
    logger.warning("%s terminated by signal %s", job.describe(), signame(signum))
    exc = TaskRevokedError("terminated")
    if not job.call.ignore_result:
        app.backend.mark_as_revoked(job.id, "terminated", job.request)
    signals.task_revoked.send(
        sender=job.task, request=job.request, terminated=True, signum=signum, expired=False
    )
    return Outcome(states.REVOKED, exc, ended_by=Terminated(signame(signum)))


def worker_lost(app: Caraway, job: Job, exitcode: int) -> Outcome:
    """Celery's semantics: requeue when ``reject_on_worker_lost``, else FAILURE."""
    task, conf = job.task, app.conf
    requeue = task.reject_on_worker_lost
    if requeue is None:
        requeue = conf.task_reject_on_worker_lost
    exc = WorkerLostError(f"Worker exited prematurely: {describe_exit(exitcode)}.")
    if job.acks_late and requeue:
        logger.warning("%s: its child %s; giving it back", job.describe(), exited(exitcode))
        again = Reject("worker lost", requeue=True)
        return Outcome(states.FAILURE, None, reject=again, ended_by=exc)
    logger.error("%s: %s", job.describe(), exc)
    return failed(app, job, exc)


def failed(app: Caraway, job: Job, exc: BaseException) -> Outcome:
    """The child could not store this failure: the supervisor does, for it."""
    ignored = job.request.ignore_result or job.task.ignore_result
    if not ignored or job.task.store_errors_even_if_ignored:
        app.backend.mark_as_failure(job.id, exc, None, job.request)
    return Outcome(states.FAILURE, exc, ended_by=exc)


def describe_exit(exitcode: int) -> str:
    if exitcode < 0:
        return f"signal {-exitcode} ({signame(-exitcode)})"
    return f"exitcode {exitcode}"


def exited(exitcode: int) -> str:
    return f"exited with {describe_exit(exitcode)}"


def signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
