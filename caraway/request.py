"""``task.request``: what a running task knows about the call that started it."""

from __future__ import annotations

from typing import Any


class Context:
    """Celery's request fields; unknown attributes read as None rather than failing."""

    id: str | None = None
    task: str | None = None
    args: list[Any] | tuple[Any, ...] | None = None
    kwargs: dict[str, Any] | None = None
    retries: int = 0
    is_eager: bool = False
    eta: str | None = None
    expires: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] | None = None
    correlation_id: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Any = None
    chain: Any = None
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    headers: dict[str, Any] | None = None
    timelimit: tuple[float | None, float | None] | None = None
    #: The limits in force for this run (the call's, else the task's, else the settings').
    time_limit: float | None = None
    soft_time_limit: float | None = None
    reply_to: str | None = None
    origin: str | None = None
    shadow: str | None = None
    ignore_result: bool = False
    called_directly: bool = True
    utc: bool = True
    stamps: dict[str, Any] | None = None
    stamped_headers: list[str] | None = None
    replaced_task_nesting: int = 0
    properties: dict[str, Any] | None = None
    acks_late: bool | None = None

    def __init__(self, **fields: Any) -> None:
        self.children: list[Any] = []
        self.__dict__.update(fields)

    def update(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def __repr__(self) -> str:
        return f"<Context: {self.__dict__!r}>"
