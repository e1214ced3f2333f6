from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)
    seen_by = models.CharField(max_length=200, blank=True)  # the worker that marked it
