"""``xmap``, ``xstarmap`` and ``chunks``: many calls of one task in few messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from caraway.canvas.group import group
from caraway.canvas.signatures import Signature, maybe_signature

if TYPE_CHECKING:
    from caraway.app import Caraway


# --- map, starmap, chunks -------------------------------------------------------------------


@Signature.register_type("xmap")
class xmap(Signature):
    """One task message that calls ``task(item)`` for every item, in the worker (``celery.map``)."""

    _builtin = "celery.map"

    def __init__(self, task: Any, it: Iterable[Any], app: Caraway | None = None, **options: Any):
        sig = maybe_signature(task, app)
        super().__init__(
            self._builtin, (), {"task": sig, "it": list(it)}, options,
            subtask_type=type(self).__name__, immutable=True, app=app or sig._app,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: Caraway | None = None) -> Signature:
        kwargs = data["kwargs"]
        return cls(kwargs["task"], kwargs["it"], app=app, **(data.get("options") or {}))

    def __repr__(self) -> str:
        task, it = self["kwargs"]["task"], self["kwargs"]["it"]
        return f"[{maybe_signature(task).task}(x) for x in {it!r}]"


@Signature.register_type("xstarmap")
class xstarmap(xmap):
    """One task message that calls ``task(*item)`` for every item (``celery.starmap``)."""

    _builtin = "celery.starmap"

    def __repr__(self) -> str:
        task, it = self["kwargs"]["task"], self["kwargs"]["it"]
        return f"[{maybe_signature(task).task}(*x) for x in {it!r}]"


@Signature.register_type("chunks")
class chunks(Signature):
    """Split ``it`` into parts of ``n`` items, each part one ``xstarmap`` message, as a group."""

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: Caraway | None = None, **options: Any
    ) -> None:
        if int(n) < 1:
            raise ValueError(f"chunks need a positive chunk size, got n={n!r}")
        sig = maybe_signature(task, app)
        super().__init__(
            "celery.chunks", (), {"task": sig, "it": list(it), "n": int(n)}, options,
            subtask_type="chunks", immutable=True, app=app or sig._app,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: Caraway | None = None) -> Signature:
        kwargs = data["kwargs"]
        return cls(kwargs["task"], kwargs["it"], kwargs["n"], app=app,
                   **(data.get("options") or {}))  # fmt: skip

    def group(self) -> group:
        kwargs = self["kwargs"]
        task, items, size = maybe_signature(kwargs["task"], self._app), kwargs["it"], kwargs["n"]
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        return group([xstarmap(task, part, app=self._app) for part in parts], app=self._app)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        return self.group().apply_async(None, None, **{**self.options, **options})

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        return self.group().apply()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async()
