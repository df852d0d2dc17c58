# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving every instance off a host (drain, evacuate): the backend-neutral core, behind one facade.

The loop (`run`): list the instances on the host, decide a move for each (check mode stops here and
returns the plan with the capacity check), disable the host's service, then keep a window of at most
`window` moves in flight, refilled as each finishes.  Completion is found with ONE shared read per
cycle (`backend.poll(handles)`), never one read per instance; a failed read is tried again next cycle,
for at most `retry_budget` seconds.  A live move past its per-instance deadline is aborted (or
force-completed) and, once the instance is seen back on the source, falls back to a cold move when
allowed.  Progress is derived from the backend's state only (instances on the host, moves in flight),
so a rerun after an interruption continues, never repeats a finished move.  A run that ends early
still reports every instance: moved, already_done, skipped, failed, in_flight or not_started.

Where each part lives (all in core/):
  move_backend.py   MoveBackend (the interface both backends implement), MoveSubject, MoveStatus,
                    Decision, MoveHandle, the move names, policy_decision (the neutral policy table)
  drain_request.py  MoveRequest (the options) and validate_request
  drain_plan.py     DrainPlan: one decision per instance, in the run's order
  drain_service.py  HostService: read and check the host's service, disable it, enable it again on failure
  drain_window.py   Window: the moves in flight, the shared read, deadlines, API faults, ending early
  drain_record.py   DrainRecord: one entry per instance, the progress file
  drain.py          DrainRun: the run in order, the result and the failure
This file re-exports the public names, so `moves.run(backend, request, check_mode, clock)` and
`moves.MoveBackend` stay where backends and modules import them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.drain import Clock, run
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.drain_request import MoveRequest, validate_request
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import (
    ADOPT, COLD, DEADLINE_RETRY_SECONDS, EVACUATE, FAIL, LIVE, MOVES, NONE, OFFLOAD, OUTCOMES, POLICIES, SKIP,
    UNMOVABLE, Decision, MoveBackend, MoveHandle, MoveStatus, MoveSubject, policy_decision)

_Clock = Clock  # the name the unit tests use for a clock of their own

__all__ = [
    'ADOPT', 'COLD', 'DEADLINE_RETRY_SECONDS', 'EVACUATE', 'FAIL', 'LIVE', 'MOVES', 'NONE', 'OFFLOAD', 'OUTCOMES',
    'POLICIES', 'SKIP', 'UNMOVABLE', 'Decision', 'MoveBackend', 'MoveHandle', 'MoveRequest', 'MoveStatus',
    'MoveSubject', 'policy_decision', 'run', 'validate_request',
]
