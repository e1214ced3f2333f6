"""``@app.task(pydantic=True)``: model arguments validated on the worker, model results dumped.

As in Celery, only parameters annotated with a pydantic model (or ``Optional`` of one) are
touched: a dict arriving for such a parameter is validated into the model, and a returned model
that matches the return annotation is dumped to JSON-ready data. Other annotations (``int``,
``list[str]``) are left alone, so ``"21"`` for an ``int`` parameter stays a string, as it does
in Celery. On the caller's side, a model passed for a model parameter is sent as its dump when
the worker would rebuild an equal model from it; otherwise it is left for the serializer to
refuse, rather than silently sending something else.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from caraway.exceptions import ImproperlyConfigured

ArgumentDumper = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]


@dataclass(frozen=True)
class PydanticOptions:
    """The task options that shape validation (Celery's ``pydantic_*`` option names)."""

    strict: bool = False
    context: dict[str, Any] = field(default_factory=dict)
    dump_kwargs: dict[str, Any] = field(default_factory=dict)


class _Models:
    """The model, if any, that each parameter and the return value of ``fun`` are typed with."""

    def __init__(self, fun: Callable[..., Any], context: dict[str, Any], strict: bool) -> None:
        try:
            pydantic = importlib.import_module("pydantic")
        except ModuleNotFoundError as exc:
            raise ImproperlyConfigured(
                f"task {context['celery_task_name']!r} has pydantic=True, but pydantic is not "
                "installed: pip install 'caraway[pydantic]' (or pydantic>=2)."
            ) from exc
        self.base: type[Any] = pydantic.BaseModel
        self.signature = inspect.signature(fun)
        try:
            self.hints: dict[str, Any] = typing.get_type_hints(fun)
        except (NameError, AttributeError, TypeError):  # unresolvable forward refs: raw ones
            self.hints = {
                name: param.annotation for name, param in self.signature.parameters.items()
            }
            self.hints["return"] = self.signature.return_annotation
        self.context = context
        self.strict = strict

    def model_for(self, name: str, value: Any) -> type[Any] | None:
        """The model parameter (or ``"return"``) ``name`` is typed with, for this value."""
        annotation = _unless_none(self.hints.get(name, inspect.Parameter.empty), value)
        if isinstance(annotation, type) and issubclass(annotation, self.base):
            return annotation
        return None

    def validate(self, model: type[Any], value: Any) -> Any:
        return model.model_validate(value, strict=self.strict, context=self.context)


def _unless_none(annotation: Any, value: Any) -> Any:
    """``X`` for ``Optional[X]`` / ``X | None`` when ``value`` is not None; else unchanged."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType) or value is None:
        return annotation
    members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return members[0] if len(members) == 1 else annotation


def wrap(
    fun: Callable[..., Any], task_name: str, app: Any, options: PydanticOptions, bound: bool
) -> tuple[Callable[..., Any], ArgumentDumper]:
    """The task body that validates and dumps, and the caller's argument dumper for it."""
    context = {**options.context, "celery_app": app, "celery_task_name": task_name}
    models = _Models(fun, context, options.strict)
    dump_kwargs = {"mode": "json", **options.dump_kwargs}

    @functools.wraps(fun)
    def run_validated(*args: Any, **kwargs: Any) -> Any:
        arguments = models.signature.bind(*args, **kwargs)
        for name, value in arguments.arguments.items():
            model = models.model_for(name, value)
            if model is not None:
                arguments.arguments[name] = models.validate(model, value)
        returned = fun(*arguments.args, **arguments.kwargs)
        model = models.model_for("return", returned)
        if model is not None and isinstance(returned, model):
            return returned.model_dump(**dump_kwargs)
        return returned

    parameters = list(models.signature.parameters.values())[1 if bound else 0 :]
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    by_keyword = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def dump_arguments(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call as the caller shaped it, with each model argument that can be, dumped."""
        sent_args = tuple(
            _dumped(models, positional[i], value, dump_kwargs) if i < len(positional) else value
            for i, value in enumerate(args)
        )
        sent_kwargs = {
            name: _dumped(models, name, value, dump_kwargs) if name in by_keyword else value
            for name, value in kwargs.items()
        }
        return sent_args, sent_kwargs

    return run_validated, dump_arguments


def _dumped(models: _Models, name: str, value: Any, dump_kwargs: dict[str, Any]) -> Any:
    """``value``'s dump if the worker rebuilds an equal model from it; else ``value`` itself."""
    if not isinstance(value, models.base):
        return value
    model = models.model_for(name, value)
    if model is None:
        return value
    try:
        dumped = value.model_dump(**dump_kwargs)
        if models.validate(model, dumped) == value:
            return dumped
    except Exception:  # a validator that only works on a worker: send the model as it is
        return value
    return value
