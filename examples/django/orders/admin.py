from django.contrib import admin

from orders.models import Order, Tally

admin.site.register(Order, list_display=("id", "product", "quantity", "status", "shipped"))
admin.site.register(Tally, list_display=("id", "orders", "shipped", "taken"))
