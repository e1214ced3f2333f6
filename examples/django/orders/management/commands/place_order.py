from django.core.management.base import BaseCommand

from orders.tasks import place_order


class Command(BaseCommand):
    help = "Place an order; a worker ships it once the order is committed."

    def add_arguments(self, parser):
        parser.add_argument("product")
        parser.add_argument("quantity", type=int)

    def handle(self, product, quantity, **options):
        self.stdout.write(str(place_order(product, quantity).pk))
