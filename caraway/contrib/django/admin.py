"""Admin pages: task and group results (read-only, searchable, filtered by state, name and
date) and periodic tasks with their schedules (editable; beat picks edits up at once)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from caraway.contrib.django import changes
from caraway.contrib.django.models import (
    ClockedSchedule,
    CrontabSchedule,
    GroupResult,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
    TaskResult,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by workers: shown and deletable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TaskResult)
class TaskResultAdmin(ReadOnlyAdmin):
    list_display = ("task_id", "task_name", "status", "date_done", "worker")
    list_filter = ("status", "task_name", "date_done", "worker")
    search_fields = ("task_id", "task_name", "task_args", "task_kwargs", "result")
    date_hierarchy = "date_done"
    readonly_fields = ("date_created", "date_done")
    fieldsets = (
        (None, {"fields": ("task_id", "task_name", "status", "worker")}),
        ("Dates", {"fields": ("date_created", "date_done")}),
        ("Outcome", {"fields": ("result", "traceback", "content_type", "content_encoding")}),
        ("Call", {"fields": ("task_args", "task_kwargs", "meta")}),
    )


@admin.register(GroupResult)
class GroupResultAdmin(ReadOnlyAdmin):
    list_display = ("group_id", "date_done")
    search_fields = ("group_id", "result")
    date_hierarchy = "date_done"


@admin.action(description="Enable the selected periodic tasks")
def enable(modeladmin: Any, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
    _switch(modeladmin, request, queryset, True)


@admin.action(description="Disable the selected periodic tasks")
def disable(modeladmin: Any, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
    _switch(modeladmin, request, queryset, False)


def _switch(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any], on: bool) -> None:
    count = queryset.update(enabled=on)
    changes.bump(queryset.db)  # a bulk update sends no signal: tell the beats here
    state = "enabled" if on else "disabled"
    modeladmin.message_user(request, f"{count} periodic task(s) {state}.", messages.SUCCESS)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):
    list_display = (
        "name", "task", "schedule", "enabled", "one_off", "total_run_count", "last_run_at",
    )  # fmt: skip
    list_filter = ("enabled", "one_off", "task", "last_run_at")
    search_fields = ("name", "task", "description")
    actions = (enable, disable)
    readonly_fields = ("last_run_at", "total_run_count", "date_changed")
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description")}),
        ("Schedule (choose one)", {"fields": ("interval", "crontab", "solar", "clocked")}),
        ("When", {"fields": ("one_off", "start_time", "expires")}),
        ("Arguments", {"fields": ("args", "kwargs")}),
        ("Routing", {"fields": ("queue", "exchange", "routing_key", "priority")}),
        ("Message", {"fields": ("headers", "expire_seconds")}),
        ("Runs", {"fields": ("last_run_at", "total_run_count", "date_changed")}),
    )

    @admin.display(description="schedule")
    def schedule(self, task: PeriodicTask) -> str:
        kind = task.schedule_kind
        return str(getattr(task, kind)) if kind else "none"


admin.site.register(IntervalSchedule)
admin.site.register(CrontabSchedule)
admin.site.register(SolarSchedule)
admin.site.register(ClockedSchedule)
