from django.db import transaction
from django.utils import timezone

from caraway import shared_task
from orders.models import Order, Tally


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def ship(order_id: int) -> str:
    """Runs after the order's transaction committed (``delay_on_commit``), so it is there."""
    order = Order.objects.get(pk=order_id)
    order.status, order.shipped = "shipped", timezone.now()
    order.save()
    return str(order)


@shared_task
def tally_orders() -> int:
    """The periodic task: one Tally row per run."""
    tally = Tally.objects.create(
        orders=Order.objects.count(), shipped=Order.objects.filter(status="shipped").count()
    )
    return tally.pk


def place_order(product: str, quantity: int) -> Order:
    """Create an order and ship it once the transaction commits (never if it rolls back)."""
    with transaction.atomic():
        order = Order.objects.create(product=product, quantity=quantity)
        ship.delay_on_commit(order.pk)
    return order
