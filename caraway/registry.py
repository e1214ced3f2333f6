"""``app.tasks``: the tasks an app knows, by name."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from caraway.exceptions import NotRegistered
from caraway.utils.text import did_you_mean

if TYPE_CHECKING:
    from caraway.task import Task


class TaskRegistry(MutableMapping[str, "Task[Any, Any]"]):
    """A dict of task name → task whose missing-key error names the closest task."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}

    def __getitem__(self, name: str) -> Task[Any, Any]:
        try:
            return self._tasks[name]
        except KeyError:
            raise NotRegistered(name, hint=did_you_mean(name, self._tasks)) from None

    def __setitem__(self, name: str, task: Task[Any, Any]) -> None:
        self._tasks[name] = task

    def __delitem__(self, name: str) -> None:
        try:
            del self._tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def register(self, task: Task[Any, Any]) -> Task[Any, Any]:
        if not task.name:
            raise ValueError(f"cannot register {task!r}: it has no name")
        self._tasks[task.name] = task
        return task

    def unregister(self, name: str | Task[Any, Any]) -> None:
        del self[name if isinstance(name, str) else str(name.name)]

    def regular(self) -> dict[str, Task[Any, Any]]:
        """User tasks, without caraway's built-in ones (``celery.*``)."""
        return {n: t for n, t in self._tasks.items() if not n.startswith("celery.")}

    def unknown_task_hint(self, name: str) -> str:
        """The message a worker logs for a task name it does not know."""
        return (
            f"Received unregistered task of type {name!r}. Is the module that defines it in"
            f" 'include' or 'imports', or imported by the worker's app module?"
            f"{did_you_mean(name, self._tasks)}"
        )
