"""What the pages and the API show, gathered in one place: the store, the ingest thread's
view of the workers, the workers' own answers (pool, queues), queue depths, dead letters."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from caraway.dashboard.ingest import Ingestor
from caraway.dashboard.queues import QueueRow, queue_row
from caraway.dashboard.store import Store
from caraway.exceptions import OperationalError
from caraway.routing import declared_queues
from caraway.utils.text import mask_url

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.dashboard.config import DashboardConfig
    from caraway.engines.base.broker import DeadLetter

logger = logging.getLogger("caraway.dashboard")

#: What Flower asks every worker for its workers list (the task lists only per worker).
INSPECTED = ("stats", "active_queues", "registered", "conf")
#: Asked in the same round for the Workers page only (Flower's list has no such field).
PAGE_ONLY = ("reserved",)
#: Seconds the workers' answers are reused before asking again.
INSPECT_TTL = 5.0
#: Fields of a Flower task, in Celery's order (``celery.events.state.Task``'s).
FLOWER_TASK_FIELDS = (
    "uuid", "name", "state", "received", "sent", "started", "rejected", "succeeded", "failed",
    "retried", "revoked", "args", "kwargs", "eta", "expires", "retries", "worker", "result",
    "exception", "timestamp", "runtime", "traceback", "exchange", "routing_key", "clock",
    "client", "root", "root_id", "parent", "parent_id", "children",
)  # fmt: skip
_SECRET_WORDS = ("password", "secret", "token", "private_key", "api_key", "access_key")


def masked(value: Any, key: str = "") -> Any:
    """``value`` with URLs' passwords and secret-looking settings hidden, at any depth."""
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v, key) for v in value]
    if isinstance(value, str):
        if any(word in key.lower() for word in _SECRET_WORDS) and value:
            return "********"
        return mask_url(value) if "://" in value else value
    return value


def flower_task(row: dict[str, Any], children: list[str] | None = None) -> dict[str, Any]:
    """A stored task with Flower's field names (``worker`` is the host name)."""
    extra = {"worker": row.get("hostname"), "client": None, "root": row.get("root_id"),
             "parent": row.get("parent_id"), "children": children or []}  # fmt: skip
    return {name: extra[name] if name in extra else row.get(name) for name in FLOWER_TASK_FIELDS}


def _ask(inspect: Any, question: str) -> dict[str, Any] | None:
    try:
        answer: dict[str, Any] | None = getattr(inspect, question)()
    except OperationalError as exc:
        logger.warning("Workers could not be asked for %s: %s", question, exc)
        return None
    return answer


class Dashboard:
    """One dashboard over one app: owns the store and the ingest thread."""

    def __init__(self, app: Caraway, config: DashboardConfig) -> None:
        self.app = app
        self.config = config
        self.store = Store(config.store_path, config.limits)
        self.ingestor = Ingestor(app, self.store)
        self._inspected: dict[str, dict[str, Any]] = {}
        self._reserved: dict[str, int] = {}
        self._inspected_at = 0.0
        self._lock = threading.Lock()

    def start(self) -> None:
        self.ingestor.start()

    def stop(self) -> None:
        self.ingestor.stop()

    # --- workers ----------------------------------------------------------------------------

    def inspect(self, refresh: bool = False, workername: str | None = None) -> dict[str, Any]:
        """The workers' answers to Flower's questions, ``{hostname: {question: answer}}``."""
        with self._lock:
            if refresh or time.monotonic() - self._inspected_at > INSPECT_TTL:
                self._inspected = self._ask_workers(workername)
                self._inspected_at = time.monotonic()
            return dict(self._inspected)

    def _ask_workers(self, workername: str | None) -> dict[str, dict[str, Any]]:
        alive = len(self.ingestor.state.alive_workers()) or None
        destination = [workername] if workername else None
        inspect = self.app.control.inspect(
            timeout=self.config.inspect_timeout, limit=alive, destination=destination
        )
        questions = INSPECTED + PAGE_ONLY
        with ThreadPoolExecutor(len(questions)) as pool:  # a broker away answers nothing
            asked = pool.map(lambda question: _ask(inspect, question), questions)
            answers = dict(zip(questions, asked, strict=True))
        reserved = answers.pop("reserved") or {}
        self._reserved = {host: len(tasks or ()) for host, tasks in reserved.items()}
        merged: dict[str, dict[str, Any]] = {}
        for question, replies in answers.items():
            for hostname, answer in (replies or {}).items():
                entry = merged.setdefault(hostname, {})
                entry[question] = masked(answer)
                entry["timestamp"] = time.time()
        return merged

    def workers(self) -> list[dict[str, Any]]:
        """Every worker seen (live ones from memory, others from the store), for the page."""
        inspected = self.inspect()
        seen = {w["hostname"]: w for w in self.store.workers()}
        for known in list(self.ingestor.state.workers.values()):
            seen[known.hostname] = {
                "hostname": known.hostname, "offline_at": known.offline_at,
                "heartbeat": known.heartbeats[-1] if known.heartbeats else None,
                "info": {"active": known.active, "processed": known.processed,
                         "loadavg": known.loadavg, "sw_ver": known.sw_ver,
                         "freq": known.freq, "pid": known.pid},
            }  # fmt: skip
        now = time.time()
        rows = []
        for hostname, worker in sorted(seen.items()):
            live = self.ingestor.state.workers.get(hostname)
            answers = inspected.get(hostname, {})
            stats = answers.get("stats") or {}
            pool = stats.get("pool") or {}
            rows.append({
                **worker["info"], "hostname": hostname,
                "online": bool(live is not None and live.alive),
                "heartbeat_age": None if worker["heartbeat"] is None
                else now - worker["heartbeat"],
                "pool": pool.get("implementation"), "concurrency": pool.get("max-concurrency"),
                "reserved": self._reserved.get(hostname),
                "queues": [q.get("name") for q in answers.get("active_queues") or ()],
            })  # fmt: skip
        return rows

    def worker_status(self) -> dict[str, bool]:
        """Flower's ``/api/workers?status=true``: alive by heartbeat."""
        return {w.hostname: w.alive for w in list(self.ingestor.state.workers.values())}

    # --- queues and dead letters ------------------------------------------------------------

    def queue_names(self) -> list[str]:
        names = declared_queues(self.app.conf.task_queues) or [self.app.conf.task_default_queue]
        for answers in self.inspect().values():
            for queue in answers.get("active_queues") or ():
                if queue.get("name") and queue["name"] not in names:
                    names.append(queue["name"])
        return names

    def queue_lengths(self) -> list[dict[str, Any]]:
        return [{"name": name, "messages": self.app.broker.size(name)}
                for name in self.queue_names()]  # fmt: skip

    def queues(self) -> list[QueueRow]:
        """For the Queues page: each queue's figures, and which workers consume it."""
        consumers: dict[str, list[str]] = {}
        for hostname, answers in self.inspect().items():
            for queue in answers.get("active_queues") or ():
                consumers.setdefault(str(queue.get("name")), []).append(hostname)
        broker = self.app.broker
        return [queue_row(name, broker.queue_stats(name), self.store, consumers.get(name, []))
                for name in self.queue_names()]  # fmt: skip

    def dead_letters(self, limit: int = 200) -> list[DeadLetter]:
        return self.app.broker.dead_letters(limit)

    def broker_description(self) -> str:
        return self.app.broker.describe()
