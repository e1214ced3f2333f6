"""A fast selection of Celery's own integration tests, run against caraway (a ratchet).

``compat/celery_suite`` runs Celery 5.7.0's ``t/integration`` with ``celery`` imported as
caraway. Here, in CI, a selection of under a minute runs on Redis, and each file must keep
at least the number of passing tests reached so far: a regression fails, a gain is a reason
to raise the number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from services import require

ROOT = Path(__file__).resolve().parents[2]
#: What runs: nodes of ``t/integration`` and a ``-k`` expression (Celery's tests, chosen for
#: speed and for the behaviour they pin: calling, retries, request fields, chains, chords,
#: stamps, task_protocol 1, inspect; test_inspect.py's test_scheduled may ask before the
#: worker holds the task, so that file's floor leaves it one miss).
SELECTION = (
    "test_tasks.py::test_tasks",
    "test_tasks.py::test_apply_tasks",
    "test_tasks.py::test_class_based_tasks",
    "test_canvas.py::test_link_error",
    "test_canvas.py::test_chain",
    "test_canvas.py::test_chord",
    "test_canvas.py::test_stamping_mechanism",
    "test_group_chains.py",
    "test_inspect.py",
)
#: The tests of the selection that run (``-k``): each pins a behaviour fixed to match Celery.
NAMES = (
    "test_simple_call",
    "test_basic_task",
    "test_ignore_result",
    "test_reject_without_requeue_stores_failure",
    "test_task_retried_once",
    "test_task_retried_headers",
    "test_properties",
    "test_soft_time_limit_exceeding_time_limit",
    "test_request_time_limits_set_via_apply_async",
    "test_request_time_limits_from_task_declaration",
    "test_apply_async_time_limits_override_task_declaration",
    "test_apply_single_task_ids",
    "test_apply_nested_parent_child_relationship",
    "test_class_based_task_retried",
    "test_simple_chain",
    "test_single_chain",
    "test_complex_chain",
    "test_replace_with_chain_that_contains_a_group",
    "test_freezing_chain_sets_id_of_last_task",
    "test_chain_of_group_followed_by_empty_groups",
    "test_chain_forwards_args_past_leading_empty_steps",
    "test_header_failure_fails_the_chords_after_it",
    "test_chain_replaced_with_a_chain_and_a_callback",
    "test_replace_chain_with_empty_chain",
    "test_mutable_errback_with_stored_arguments",
    "test_error_propagates_to_chord_from_simple",
    "test_immutable_errback_called_by_chord_from_chain",
    "test_stamp_value_type_defined_by_visitor",
    "test_properties_not_affected_from_stamping",
    "test_task_received_has_access_to_stamps",
    "test_err_linking_stamped_sig",
    "test_stamps_remain_on_task_retry",
    "test_stamp_canvas_with_dictionary_link_error",
    "test_revoke_by_stamped_headers_no_match",
    "test_retry_switches_from_kwargs_to_args",
    "test_retry_switches_from_args_to_kwargs",
    "test_revoke_keeps_state_of_task_started_elsewhere",
    "test_group_results_in_chain",
    "test_groupresult_serialization",
    "test_chain_of_implicit_chords_as_body",
    "test_chord_header_with_empty_chains",
    "test_errback_set_as_one_signature_runs_on_header_failure",
    "test_group_chains",  # the whole file (module names match -k): protocols 2 and 1
    "test_inspect",  # the whole file: Celery's inspect replies, field by field
    "test_nested_group_chain",  # a chain ending in a group, as a chord header member
    "test_nested_chord_group_chain_group_tail",
    "(test_chain_of_implicit_chords_body_failure and header)",  # a chain body's errback
    "test_chord_on_error",  # errbacks as the failed body's children, results kept in .j
    "test_all_tasks_of_canvas_are_stamped",  # a one-member group in a chain is its task
)
KEYWORDS = " or ".join(NAMES)
#: Fewest tests that must pass per file (raise these as caraway gets better).
RATCHET = {
    "test_tasks.py": 20,
    "test_canvas.py": 36,
    "test_group_chains.py": 21,
    "test_inspect.py": 10,
}


@pytest.mark.timeout(400)
def test_celerys_own_tests_keep_passing_against_caraway(tmp_path: Path) -> None:
    require("redis")  # the runner starts a redis-server of its own; the service proves one is here
    summary = tmp_path / "summary.json"
    command = [
        sys.executable, "-m", "compat.celery_suite", "--broker", "redis",
        "--summary", str(summary), "--test-timeout", "30",
        f"--pytest-args=-k '{KEYWORDS}'", *SELECTION,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=380)
    assert summary.is_file(), f"the runner wrote no summary:\n{done.stdout}\n{done.stderr}"
    files = json.loads(summary.read_text())["files"]
    passed = {name: files.get(name, {}).get("passed", 0) for name in RATCHET}
    below = {name: (passed[name], least) for name, least in RATCHET.items() if passed[name] < least}
    assert not below, f"fewer of Celery's tests pass (now, least): {below}\n{done.stdout[-4000:]}"
