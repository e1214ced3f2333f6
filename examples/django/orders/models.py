from django.db import models


class Order(models.Model):
    product = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, default="new")
    created = models.DateTimeField(auto_now_add=True)
    shipped = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product} ({self.status})"


class Tally(models.Model):
    """What the periodic task counted, one row per run."""

    orders = models.PositiveIntegerField()
    shipped = models.PositiveIntegerField()
    taken = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "tallies"

    def __str__(self) -> str:
        return f"{self.shipped}/{self.orders} shipped at {self.taken:%H:%M:%S}"
