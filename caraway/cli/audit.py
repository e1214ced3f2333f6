# ruff: noqa: E501  (the table reads best as one row per line)
"""Celery 5.7's command line, command by command and flag by flag, and what caraway does with
each: it works (a test runs it), it is refused (the command stops and says what to use), or
it is ignored on purpose (the command warns once, naming the flag and why).

``METHODS`` does the same for the methods of ``inspect`` and ``control``.

One table drives the refusals and warnings (``caraway.cli.base.celery_flags``), the CLI
section of ``docs/differences.md`` (``tools/gen-settings-docs``) and
``tests/cli/test_cli_audit.py``, which checks it against the click commands of the installed
Celery, so a flag Celery adds fails a test until it has a row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from caraway.settings import Status


@dataclass(frozen=True)
class Flag:
    """One Celery command (``spellings`` empty) or one option of it, and caraway's answer."""

    command: str  # as typed after ``celery``: "worker", "amqp queue.purge"; "" is the root
    spellings: tuple[str, ...]  # every spelling Celery accepts, e.g. ("-E", "--task-events")
    status: Status
    reason: str = ""  # refused: what to use instead; ignored: why it changes nothing here
    test: str = ""  # works: "tests/<file>.py::<test>", which runs the command with the flag
    takes_value: bool = False  # refused/ignored options: the parser must swallow a value

    @property
    def label(self) -> str:
        """How the docs and messages name it: ``worker --pool-start-method``."""
        words = [self.command] if self.command else []
        if self.spellings:
            words.append("/".join(self.spellings))
        return " ".join(words)


def works(command: str, *spellings: str, test: str) -> Flag:
    return Flag(command, spellings, Status.WORKS, test=test)


def refused(command: str, *spellings: str, reason: str, value: bool = False) -> Flag:
    return Flag(command, spellings, Status.REFUSED, reason=reason, takes_value=value)


def ignored(command: str, *spellings: str, reason: str, value: bool = False) -> Flag:
    return Flag(command, spellings, Status.IGNORED, reason=reason, takes_value=value)


_PARSING = "tests/cli/test_cli_parsing.py::"
_FLAGS = "tests/cli/test_cli_celery_flags.py::"
_AUDIT = "tests/cli/test_cli_audit_flags.py::"
_COMMANDS = "tests/cli/test_cli_commands.py::"
_PRODUCTION = "tests/cli/test_cli_worker_production.py::"
_REMOTE = "tests/worker/test_remote_embedded.py::"
_MIGRATE = "tests/cli/test_cli_migrate.py::"
_MULTI = "tests/cli/test_cli_multi.py::"
_BEAT = "tests/beat/test_beat_sqlite.py::"

_NO_AMQP = (
    "it is an AMQP admin shell; use rabbitmqadmin or RabbitMQ's management UI (the queues "
    "of any broker: caraway list bindings, caraway purge)"
)
_NO_GRAPH = "it draws Celery's bootsteps and cluster graphs, which caraway has no equivalent of"
_NO_LOGTOOL = (
    "it parses Celery's log files; caraway events --dump, the task events or the dashboard "
    "give the same facts as they happen"
)
_DETACH_FORKS = (
    "--detach forks this process (it starts no new interpreter), so there is no executable "
    "to choose; run the caraway of the Python you want"
)
_EVENTS_DAEMON = (
    "it only serves a detached snapshot camera (--camera --detach), which caraway events does "
    "not have: run caraway dashboard for a kept history"
)
_NO_BEAT_REMOTE = (
    "caraway beat takes no remote-control commands (nothing to name or switch on); "
    "see and edit its schedules with caraway beat schedules"
)

#: Every command and option of Celery 5.7's ``celery`` command (``celery flower`` is Flower's).
CLI: tuple[Flag, ...] = (
    works("", test=_PARSING + "test_version_and_the_list_of_commands"),
    works("", "-A", "--app", test=_PARSING + "test_dash_a_finds_the_app_the_ways_celery_does"),
    works("", "-b", "--broker", test=_PARSING + "test_broker_backend_and_config_options_override_the_app"),
    works("", "--result-backend", test=_PARSING + "test_broker_backend_and_config_options_override_the_app"),
    refused("", "--loader", value=True, reason=(
        "caraway has no loaders: read settings with --config MODULE or "
        "app.config_from_object(...), and task modules with include, imports or worker -I"
    )),
    works("", "--config", test=_PARSING + "test_broker_backend_and_config_options_override_the_app"),
    works("", "--workdir", test=_AUDIT + "test_workdir_changes_directory_before_finding_the_app"),
    ignored("", "-C", "--no-color", reason=(
        "caraway's commands and worker logs print no colour, so there is none to turn off"
    )),
    works("", "-q", "--quiet", test=_AUDIT + "test_quiet_silences_the_worker_banner"),
    works("", "--version", test=_PARSING + "test_version_and_the_list_of_commands"),
    ignored("", "--skip-checks", reason=(
        "it skips Django's system checks at worker start; caraway's Django fixup runs none"
    )),
    # celery amqp: an AMQP shell.
    refused("amqp", reason=_NO_AMQP),
    *(refused(f"amqp {method}", reason=_NO_AMQP) for method in (
        "basic.ack", "basic.get", "basic.publish", "exchange.declare", "exchange.delete",
        "queue.bind", "queue.declare", "queue.delete", "queue.purge", "repl",
    )),
    # celery beat
    works("beat", test=_BEAT + "test_state_survives_a_restart_and_missed_runs_are_sent_once"),
    works("beat", "--detach", test=_AUDIT + "test_beat_detaches_with_its_pidfile_logfile_and_umask"),
    works("beat", "-s", "--schedule", test=_BEAT + "test_state_survives_a_restart_and_missed_runs_are_sent_once"),
    works("beat", "-S", "--scheduler", test=_BEAT + "test_a_schedule_added_through_the_api_runs_without_restarting_beat"),
    works("beat", "--max-interval", test=_AUDIT + "test_beat_detaches_with_its_pidfile_logfile_and_umask"),
    refused("beat", "--enable-remote-control", "--no-enable-remote-control", reason=_NO_BEAT_REMOTE),
    refused("beat", "-n", "--hostname", value=True, reason=_NO_BEAT_REMOTE),
    works("beat", "-l", "--loglevel", test=_BEAT + "test_state_survives_a_restart_and_missed_runs_are_sent_once"),
    works("beat", "--logfile", "-f", test=_AUDIT + "test_beat_detaches_with_its_pidfile_logfile_and_umask"),
    works("beat", "--pidfile", test=_BEAT + "test_beat_stops_on_sigterm_and_hands_the_lease_over"),
    works("beat", "--uid", test=_AUDIT + "test_beat_switches_user_and_group"),
    works("beat", "--gid", test=_AUDIT + "test_beat_switches_user_and_group"),
    works("beat", "--umask", test=_AUDIT + "test_beat_detaches_with_its_pidfile_logfile_and_umask"),
    ignored("beat", "--executable", value=True, reason=_DETACH_FORKS),
    # celery call
    works("call", test=_COMMANDS + "test_call_result_and_dead_letters_against_a_worker"),
    works("call", "-a", "--args", test=_FLAGS + "test_call_options_and_result_waiting"),
    works("call", "-k", "--kwargs", test=_COMMANDS + "test_call_result_and_dead_letters_against_a_worker"),
    works("call", "--eta", test=_COMMANDS + "test_purge_deletes_waiting_messages_even_delayed_ones"),
    works("call", "--countdown", test=_COMMANDS + "test_purge_deletes_waiting_messages_even_delayed_ones"),
    works("call", "--expires", test=_FLAGS + "test_call_options_and_result_waiting"),
    works("call", "--serializer", test=_FLAGS + "test_call_options_and_result_waiting"),
    works("call", "--queue", test=_AUDIT + "test_call_queue_and_result_traceback"),
    works("call", "--exchange", test=_FLAGS + "test_call_exchange_and_routing_key_reach_the_bound_queue"),
    works("call", "--routing-key", test=_FLAGS + "test_call_exchange_and_routing_key_reach_the_bound_queue"),
    # celery control / inspect / status
    works("control", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("control", "--list", test=_AUDIT + "test_inspect_and_control_list_their_methods"),
    works("control", "-t", "--timeout", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("control", "-d", "--destination", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("control", "-j", "--json", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("inspect", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("inspect", "--list", test=_AUDIT + "test_inspect_and_control_list_their_methods"),
    works("inspect", "-t", "--timeout", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("inspect", "-d", "--destination", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("inspect", "-j", "--json", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("status", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("status", "-t", "--timeout", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("status", "-d", "--destination", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("status", "-j", "--json", test=_REMOTE + "test_commands_talk_to_a_worker"),
    # celery events
    works("events", test=_REMOTE + "test_events_dump_and_live_view"),
    works("events", "-d", "--dump", test=_REMOTE + "test_events_dump_and_live_view"),
    refused("events", "-c", "--camera", value=True, reason=(
        "caraway events has no snapshot cameras; caraway dashboard keeps the history of tasks "
        "and workers (or consume the events yourself: caraway.events.EventReceiver)"
    )),
    refused("events", "-d", "--detach", reason=_EVENTS_DAEMON),
    works("events", "-F", "--frequency", "--freq", test=_REMOTE + "test_events_dump_and_live_view"),
    refused("events", "-r", "--maxrate", value=True, reason=_EVENTS_DAEMON),
    ignored("events", "-l", "--loglevel", value=True, reason=(
        "caraway events prints the events it receives and logs nothing else"
    )),
    refused("events", "--logfile", "-f", value=True, reason=_EVENTS_DAEMON),
    refused("events", "--pidfile", value=True, reason=_EVENTS_DAEMON),
    refused("events", "--uid", value=True, reason=_EVENTS_DAEMON),
    refused("events", "--gid", value=True, reason=_EVENTS_DAEMON),
    refused("events", "--umask", value=True, reason=_EVENTS_DAEMON),
    refused("events", "--executable", value=True, reason=_EVENTS_DAEMON),
    # celery flower (Flower's command): caraway's dashboard serves Flower's API.
    works("flower", test="tests/dashboard/test_dashboard_cli.py::test_flowers_environment_variables_are_read"),
    # celery graph
    refused("graph", reason=_NO_GRAPH),
    refused("graph bootsteps", reason=_NO_GRAPH),
    refused("graph workers", reason=_NO_GRAPH),
    # celery list
    works("list", test=_REMOTE + "test_list_bindings"),
    works("list bindings", test=_REMOTE + "test_list_bindings"),
    # celery logtool
    refused("logtool", reason=_NO_LOGTOOL),
    *(refused(f"logtool {name}", reason=_NO_LOGTOOL)
      for name in ("debug", "errors", "incomplete", "stats", "traces")),
    # celery migrate
    works("migrate", test=_MIGRATE + "test_tasks_move_to_redis_and_run_there"),
    works("migrate", "-n", "--limit", test=_MIGRATE + "test_without_ack_the_source_keeps_every_message"),
    works("migrate", "-t", "--timeout", test=_AUDIT + "test_migrate_takes_queues_and_a_timeout"),
    works("migrate", "-a", "--ack-messages", test=_MIGRATE + "test_tasks_move_to_redis_and_run_there"),
    works("migrate", "-T", "--tasks", test=_MIGRATE + "test_tasks_move_to_redis_and_run_there"),
    works("migrate", "-Q", "--queues", test=_AUDIT + "test_migrate_takes_queues_and_a_timeout"),
    works("migrate", "-F", "--forever", test=_MIGRATE + "test_without_ack_the_source_keeps_every_message"),
    # celery multi: its own parser (not click); the actions and multi's own switches.
    works("multi", test=_MULTI + "test_start_restart_and_stopwait_run_real_workers"),
    works("multi start", test=_MULTI + "test_start_restart_and_stopwait_run_real_workers"),
    works("multi restart", test=_MULTI + "test_start_restart_and_stopwait_run_real_workers"),
    works("multi stopwait", test=_MULTI + "test_start_restart_and_stopwait_run_real_workers"),
    works("multi stop", test=_MULTI + "test_kill_and_what_multi_refuses"),
    works("multi kill", test=_MULTI + "test_kill_and_what_multi_refuses"),
    works("multi show", test=_AUDIT + "test_multi_show_names_get_expand_and_help"),
    works("multi names", test=_AUDIT + "test_multi_show_names_get_expand_and_help"),
    works("multi get", test=_AUDIT + "test_multi_show_names_get_expand_and_help"),
    works("multi expand", test=_AUDIT + "test_multi_show_names_get_expand_and_help"),
    works("multi help", test=_AUDIT + "test_multi_show_names_get_expand_and_help"),
    works("multi stop_verify", test=_AUDIT + "test_multi_show_names_get_expand_and_help"),
    works("multi", "--verbose", test=_AUDIT + "test_multi_show_names_get_expand_and_help"),
    works("multi", "-q", "--quiet", test=_AUDIT + "test_multi_show_names_get_expand_and_help"),
    ignored("multi", "--nosplash", reason="caraway multi prints no splash screen"),
    ignored("multi", "--no-color", reason="caraway multi prints no colour"),
    # celery purge
    works("purge", test=_COMMANDS + "test_purge_deletes_waiting_messages_even_delayed_ones"),
    works("purge", "-f", "--force", test=_COMMANDS + "test_purge_deletes_waiting_messages_even_delayed_ones"),
    works("purge", "-Q", "--queues", test="tests/remote/test_control.py::test_purge_removes_exactly_the_queued_messages"),
    works("purge", "-X", "--exclude-queues", test=_AUDIT + "test_purge_exclude_queues_keeps_them"),
    # celery report
    works("report", test=_PARSING + "test_dash_a_finds_the_app_the_ways_celery_does"),
    # celery result
    works("result", test=_COMMANDS + "test_call_result_and_dead_letters_against_a_worker"),
    works("result", "-t", "--task", test=_AUDIT + "test_call_queue_and_result_traceback"),
    works("result", "--traceback", test=_AUDIT + "test_call_queue_and_result_traceback"),
    # celery shell
    works("shell", test=_FLAGS + "test_shell_has_the_app_and_its_tasks"),
    works("shell", "-I", "--ipython", test=_AUDIT + "test_shell_flavours_and_without_tasks"),
    refused("shell", "-B", "--bpython", reason=(
        "caraway shell offers IPython (-I) or the standard shell (--python); bpython is not "
        "supported"
    )),
    works("shell", "--python", test=_FLAGS + "test_shell_has_the_app_and_its_tasks"),
    works("shell", "-T", "--without-tasks", test=_AUDIT + "test_shell_flavours_and_without_tasks"),
    refused("shell", "--eventlet", reason=(
        "the shell runs no pool, so it patches nothing; if your code needs eventlet's "
        "patching, run eventlet.monkey_patch() as the shell's first line"
    )),
    refused("shell", "--gevent", reason=(
        "the shell runs no pool, so it patches nothing; if your code needs gevent's "
        "patching, run gevent.monkey.patch_all() as the shell's first line"
    )),
    # celery upgrade
    works("upgrade", test="tests/cli/test_cli_upgrade.py::test_old_names_become_new_ones_with_a_backup"),
    works("upgrade settings", test="tests/cli/test_cli_upgrade.py::test_old_names_become_new_ones_with_a_backup"),
    works("upgrade settings", "--django", test="tests/cli/test_cli_upgrade.py::test_django_keeps_the_namespace_and_no_backup_means_none"),
    works("upgrade settings", "--compat", test=_AUDIT + "test_upgrade_compat_keeps_the_old_names"),
    works("upgrade settings", "--no-backup", test="tests/cli/test_cli_upgrade.py::test_django_keeps_the_namespace_and_no_backup_means_none"),
    # celery worker
    works("worker", test=_COMMANDS + "test_worker_runs_tasks_and_stops_warmly_on_sigterm"),
    works("worker", "-n", "--hostname", test=_COMMANDS + "test_worker_runs_tasks_and_stops_warmly_on_sigterm"),
    works("worker", "-D", "--detach", test=_PRODUCTION + "test_detach_runs_the_worker_in_the_background_with_its_pidfile"),
    works("worker", "-S", "--statedb", test=_AUDIT + "test_worker_flags_seen_by_monitors"),
    works("worker", "-l", "--loglevel", test=_PRODUCTION + "test_prefork_worker_with_child_logfiles_pidfile_and_health_probes"),
    works("worker", "-O", "--optimization", test=_FLAGS + "test_worker_flags_as_celery_spells_them"),
    works("worker", "--prefetch-multiplier", test="tests/worker/test_worker_green_pools.py::test_warm_shutdown_finishes_running_tasks_gives_back_the_prefetched_then_cold"),
    works("worker", "--disable-prefetch", test=_AUDIT + "test_worker_flags_seen_by_monitors"),
    works("worker", "-c", "--concurrency", test=_PRODUCTION + "test_prefork_worker_with_child_logfiles_pidfile_and_health_probes"),
    works("worker", "-P", "--pool", test=_FLAGS + "test_worker_flags_as_celery_spells_them"),
    works("worker", "-E", "--task-events", "--events", test=_AUDIT + "test_worker_flags_seen_by_monitors"),
    works("worker", "--time-limit", test=_FLAGS + "test_worker_flags_as_celery_spells_them"),
    works("worker", "--soft-time-limit", test=_FLAGS + "test_worker_flags_as_celery_spells_them"),
    works("worker", "--max-tasks-per-child", test=_PRODUCTION + "test_prefork_worker_with_child_logfiles_pidfile_and_health_probes"),
    refused("worker", "--pool-start-method", value=True, reason=(
        "caraway's prefork pool always forks its children (Celery's 'fork', its default); "
        "'spawn' is not available, so drop the option"
    )),
    works("worker", "--max-memory-per-child", test=_AUDIT + "test_worker_takes_the_child_limits"),
    works("worker", "--purge", "--discard", test=_FLAGS + "test_worker_flags_as_celery_spells_them"),
    works("worker", "--queues", "-Q", test=_COMMANDS + "test_worker_runs_tasks_and_stops_warmly_on_sigterm"),
    works("worker", "--exclude-queues", "-X", test=_COMMANDS + "test_worker_runs_tasks_and_stops_warmly_on_sigterm"),
    works("worker", "--include", "-I", test=_FLAGS + "test_worker_flags_as_celery_spells_them"),
    ignored("worker", "--without-gossip", reason=(
        "caraway workers never listen to each other's events (there is no gossip), so there "
        "is nothing to turn off"
    )),
    works("worker", "--without-mingle", test=_FLAGS + "test_worker_flags_as_celery_spells_them"),
    works("worker", "--without-heartbeat", test=_AUDIT + "test_worker_flags_seen_by_monitors"),
    works("worker", "--heartbeat-interval", test=_AUDIT + "test_heartbeat_interval_sets_the_pace_and_the_freq"),
    works("worker", "--autoscale", test=_AUDIT + "test_worker_flags_seen_by_monitors"),
    works("worker", "-B", "--beat", test=_BEAT + "test_worker_b_runs_a_one_second_task_once_a_second"),
    works("worker", "-s", "--schedule-filename", "--schedule", test=_BEAT + "test_worker_b_runs_a_one_second_task_once_a_second"),
    works("worker", "--scheduler", test=_AUDIT + "test_worker_takes_the_child_limits"),
    works("worker", "--logfile", "-f", test=_PRODUCTION + "test_prefork_worker_with_child_logfiles_pidfile_and_health_probes"),
    works("worker", "--pidfile", test=_PRODUCTION + "test_prefork_worker_with_child_logfiles_pidfile_and_health_probes"),
    works("worker", "--uid", test=_FLAGS + "test_uid_switches_the_worker_to_another_user"),
    works("worker", "--gid", test=_FLAGS + "test_gid_switches_the_worker_group"),
    works("worker", "--umask", test=_PRODUCTION + "test_detach_runs_the_worker_in_the_background_with_its_pidfile"),
    ignored("worker", "--executable", value=True, reason=_DETACH_FORKS),
)  # fmt: skip


_INSPECT = "tests/remote/test_inspect.py::"
_CONTROL = "tests/remote/test_control.py::"

#: The remote-control methods of ``celery inspect`` and ``celery control`` (Celery's panel).
METHODS: tuple[Flag, ...] = (
    works("inspect active", test=_CONTROL + "test_revoke_terminate_stops_a_running_task"),
    works("inspect active_queues", test=_INSPECT + "test_registered_stats_active_queues_and_conf"),
    works("control add_consumer", test=_CONTROL + "test_add_consumer_then_cancel_consumer"),
    works("control autoscale", test=_CONTROL + "test_pool_grow_and_shrink"),
    works("control cancel_consumer", test=_CONTROL + "test_add_consumer_then_cancel_consumer"),
    works("inspect clock", test=_INSPECT + "test_events_arrive_in_order_with_their_fields"),
    works("inspect conf", test=_INSPECT + "test_registered_stats_active_queues_and_conf"),
    works("control disable_events", test=_INSPECT + "test_a_worker_without_task_events_sends_none_until_enabled"),
    ignored("control election", reason=(
        "it runs an election among workers that gossip; caraway workers run no gossip, so "
        "each answers that it takes no part"
    )),
    works("control enable_events", test=_INSPECT + "test_a_worker_without_task_events_sends_none_until_enabled"),
    works("control heartbeat", test=_AUDIT + "test_worker_flags_seen_by_monitors"),
    works("inspect hello", test=_AUDIT + "test_remote_methods_from_the_command_line"),
    works("inspect memdump", test=_AUDIT + "test_remote_methods_from_the_command_line"),
    works("inspect memsample", test=_AUDIT + "test_remote_methods_from_the_command_line"),
    refused("inspect objgraph", reason=(
        "it draws the worker's object graph with the objgraph package; look at memory with "
        "caraway inspect memsample / memdump, or tracemalloc in the task's process"
    )),
    works("inspect ping", test=_AUDIT + "test_quiet_silences_the_worker_banner"),
    works("control pool_grow", test=_CONTROL + "test_pool_grow_and_shrink"),
    works("control pool_restart", test=_FLAGS + "test_worker_flags_as_celery_spells_them"),
    works("control pool_shrink", test=_CONTROL + "test_pool_grow_and_shrink"),
    works("inspect query_task", test=_INSPECT + "test_reserved_scheduled_query_task_and_revoked"),
    works("control rate_limit", test=_CONTROL + "test_rate_limit_holds_then_lifts"),
    works("inspect registered", test=_REMOTE + "test_commands_talk_to_a_worker"),
    works("inspect report", test=_AUDIT + "test_remote_methods_from_the_command_line"),
    works("inspect reserved", test=_INSPECT + "test_reserved_scheduled_query_task_and_revoked"),
    works("control revoke", test=_AUDIT + "test_worker_flags_seen_by_monitors"),
    refused("control revoke_by_stamped_headers", reason=(
        "caraway has no task stamping yet, so there are no stamped headers to match; revoke "
        "by task id (caraway revoke ID ...)"
    )),
    works("inspect revoked", test=_INSPECT + "test_reserved_scheduled_query_task_and_revoked"),
    works("inspect scheduled", test=_INSPECT + "test_reserved_scheduled_query_task_and_revoked"),
    works("control shutdown", test=_CONTROL + "test_a_revoked_id_reaches_a_worker_started_later_and_shutdown_stops_it"),
    works("inspect stats", test=_AUDIT + "test_worker_flags_seen_by_monitors"),
    works("control terminate", test=_FLAGS + "test_control_terminate_stops_a_running_task"),
    works("control time_limit", test=_CONTROL + "test_time_limit_applies_to_the_next_run"),
)  # fmt: skip


def method_row(kind: str, method: str) -> Flag | None:
    """The row of ``caraway inspect|control <method>``, if Celery has that method."""
    return next((row for row in METHODS if row.command == f"{kind} {method}"), None)


def rows_for(command: str) -> tuple[Flag, ...]:
    """The option rows of ``command`` (``""``: the ``caraway`` command itself)."""
    return tuple(row for row in CLI if row.command == command and row.spellings)


def refused_commands() -> dict[str, str]:
    """Celery's top-level commands caraway lacks -> what to use instead."""
    return {
        row.command: row.reason
        for row in CLI
        if row.status is Status.REFUSED and not row.spellings and " " not in row.command
    }
