"""``pydantic=True`` tasks: model arguments validated where the task runs, model results dumped,
and models a caller passes sent as data — the behaviour Celery 5.5+ gives the same option."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from caraway import Caraway
from caraway.contrib.testing.worker import start_worker
from caraway.engines.base.broker import Outgoing
from caraway.exceptions import EncodeError, ImproperlyConfigured
from caraway.protocol import parse_task_message

JSON = frozenset({"application/json"})


#: What the validator of ``Strict`` was given as context (models must be module-level: under
#: ``from __future__ import annotations`` a local class cannot be resolved from its name).
SEEN: dict[str, Any] = {}


class Order(BaseModel):
    sku: str
    quantity: int


class Receipt(BaseModel):
    sku: str
    total: int


class Shouty(BaseModel):
    word: str

    @field_validator("word")
    @classmethod
    def upper(cls, value: str) -> str:
        return value.upper()


class Strict(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def remember(cls, value: int, info: Any) -> int:
        SEEN.update(info.context)
        return value


def _tasks(app: Caraway) -> tuple[Any, Any, Any]:
    @app.task(pydantic=True)
    def price(order: Order, unit: int) -> Receipt:
        return Receipt(sku=order.sku, total=order.quantity * unit)

    @app.task(pydantic=True, bind=True)
    def maybe(self: Any, order: Order | None = None) -> str:
        return f"{self.name}:{type(order).__name__}:{order.quantity if order else '-'}"

    @app.task(pydantic=True)
    def twice(x: int) -> int:
        return x * 2

    return price, maybe, twice


def test_a_worker_validates_dicts_into_models_and_dumps_the_result(app: Caraway) -> None:
    price, maybe, twice = _tasks(app)
    with start_worker(app, pool="solo", perform_ping_check=False):
        assert price.delay({"sku": "a1", "quantity": "3"}, 5).get(timeout=10) == {
            "sku": "a1",
            "total": 15,
        }
        assert maybe.delay({"sku": "b", "quantity": 2}).get(timeout=10).endswith(":Order:2")
        assert maybe.delay(None).get(timeout=10).endswith(":NoneType:-")
        # Only model annotations are touched, as in Celery: "21" for an int stays a string.
        assert twice.delay("21").get(timeout=10) == "2121"


def test_an_invalid_argument_fails_the_task_with_pydantics_error(app: Caraway) -> None:
    price, _, _ = _tasks(app)
    with start_worker(app, pool="solo", perform_ping_check=False):
        result = price.delay({"sku": "a1", "quantity": "many"}, 5)
        # pydantic builds its ValidationError only itself, so the caller gets a stand-in of the
        # same name carrying the text (Celery gives a bare Exception there).
        with pytest.raises(Exception, match="quantity") as raised:
            result.get(timeout=10)
        assert type(raised.value).__name__ == "ValidationError"
        assert result.state == "FAILURE"
        assert "int_parsing" in (result.traceback or "")


def test_a_model_the_caller_passes_is_sent_as_data(app: Caraway, published: list[Outgoing]) -> None:
    price, _, _ = _tasks(app)
    price.apply_async((Order(sku="c", quantity=4),), {"unit": 2})
    call = parse_task_message(published[-1].message, JSON)
    assert call.args == [{"sku": "c", "quantity": 4}]
    assert call.kwargs == {"unit": 2}


def test_only_models_typed_as_models_are_dumped(app: Caraway, published: list[Outgoing]) -> None:
    @app.task(pydantic=True)
    def shout(word: Shouty, note: Any = None) -> str:
        return word.word

    assert shout.apply(({"word": "hi"},)).get() == "HI"
    # Shouty(word="hi") dumps to {"word": "HI"}, which rebuilds an equal model: sent as data.
    shout.apply_async((Shouty(word="hi"),))
    assert parse_task_message(published[-1].message, JSON).args == [{"word": "HI"}]
    # A model for a parameter not typed with it is not ours to dump: JSON refuses it.
    with pytest.raises(EncodeError):
        shout.apply_async((), {"word": {"word": "x"}, "note": Order(sku="a", quantity=1)})


def test_strict_and_context_reach_the_validator(app: Caraway) -> None:
    SEEN.clear()

    @app.task(pydantic=True, pydantic_strict=True, pydantic_context={"tenant": "t1"})
    def count(item: Strict) -> int:
        return item.n

    assert count.apply(({"n": 3},)).get() == 3
    assert SEEN["tenant"] == "t1"
    assert SEEN["celery_task_name"] == count.name
    assert SEEN["celery_app"] is app
    with pytest.raises(ValidationError):
        count.apply(({"n": "3"},)).get()


def test_dump_kwargs_shape_the_result(app: Caraway) -> None:
    @app.task(pydantic=True, pydantic_dump_kwargs={"exclude": {"total"}})
    def receipt(sku: str) -> Receipt:
        return Receipt(sku=sku, total=1)

    assert receipt.apply(("z",)).get() == {"sku": "z"}


def test_without_pydantic_installed_the_task_is_refused(
    app: Caraway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)
    with pytest.raises(ImproperlyConfigured, match="pip install"):

        @app.task(pydantic=True)
        def needs(order: dict[str, Any]) -> None: ...
