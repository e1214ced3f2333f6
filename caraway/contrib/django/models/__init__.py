"""The app's models: task and group results, and the periodic tasks beat reads."""

from caraway.contrib.django.models.beat import (
    BeatLease,
    BeatRun,
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    ScheduleChange,
    SolarSchedule,
)
from caraway.contrib.django.models.results import GroupResult, ResultCounter, TaskResult

__all__ = [
    "BeatLease",
    "BeatRun",
    "ClockedSchedule",
    "CrontabSchedule",
    "GroupResult",
    "IntervalSchedule",
    "PeriodicTask",
    "ResultCounter",
    "ScheduleChange",
    "SolarSchedule",
    "TaskResult",
]
