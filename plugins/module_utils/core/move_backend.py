# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a backend implements for host_evacuate: MoveBackend, and the values it trades with the core.

Beyond the plain verbs:
  * MoveBackend has `get_service(host)` / `set_service(host, ...)` (None on a backend without a
    compute-service notion, e.g. libvirt: the core then neither disables nor restores anything),
    `adopt(subject)` (resume a move found in flight by a rerun) and `request_count()`.
  * plan_move returns a `Decision(move, reason, note)`; `policy_decision()` below is the neutral
    policy table a backend calls first and then refines with what its hypervisor can do.
  * start_move returns a `MoveHandle` (backends keep their own keys in `handle.data`; `migration_id`
    there, when known, is reported for a move still in flight when a run ends early).
  * poll(handles) is the ONE shared read of a cycle.  It may raise any errors.VmopsError: the core
    tolerates failed reads for `retry_budget` seconds (see drain_window.py).
  * finish(handle, status) gets the last MoveStatus and returns the final MoveStatus (end host/state).
    A move of several steps (resume, move, suspend again; cold move, confirm) returns a status that is
    neither done nor failed: the core then keeps the handle in flight (in the window, under its
    deadline) and calls finish() again on the next done.  On a failed status finish() undoes what it
    can without waiting (unlock, suspend again) and returns the status to report.
  * can_cold_fallback(handle, status) -> None or a reason why this instance gets no cold fallback
    (e.g. Nova cold-migrates only active and stopped servers).
  * Extra move names: 'offload' (a shelved server is offloaded: it then has no host) and 'adopt'
    (a move already in flight when the run started).  A plan_move Decision 'unmovable' (e.g. a paused
    server Nova cannot evacuate) fails that instance alone, with the reason, before anything is sent;
    the others still move ('fail' instead refuses the whole run).
  * abandon(handle, message) -> message: the core stops following a move still in flight (two deadlines
    passed, the run's timeout, or the run ended early); the backend may undo what start_move did
    (OpenStack: release a lock it took) and returns the message to report.  The move itself goes on.
  * abort()/force_complete() raising errors.BackendError is retried every DEADLINE_RETRY_SECONDS for at
    most another deadline (a migration still queued or being checked cannot be aborted yet).
  * capacity() may return any JSON-able value (OpenStack: a dict with per-host rows and a verdict).
  * source_watch(request) -> a SourceWatch or None: what the core reads, every `every` seconds while
    the window runs and again after any refused start, to learn that the host being emptied is no longer
    what the run assumes (a drained host died; an evacuated host is alive).  Its alarm ends the run
    early: nothing more is sent.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states

# One instance found on the host.
#   id, name: UUID and name; state: a states.* name; task: None when settled, else what it is busy with
#   host: where it is now; locked: bool; details: backend facts (status, flavor, migration in flight ...)
MoveSubject = collections.namedtuple('MoveSubject', 'id name state task host locked details')

# What one shared read says about one move in flight.
#   done:   the move finished (instance on another host, settled; a cold move may still need finish())
#   failed: the move ended without moving the instance (error, aborted, refused); message says why
#   host, state: where the instance is and its state now
MoveStatus = collections.namedtuple('MoveStatus', 'done failed message host state')

# What to do with one instance: move in MOVES; reason explains skip/fail; note is shown in the plan.
Decision = collections.namedtuple('Decision', 'move reason note')
Decision.__new__.__defaults__ = (None, None)

LIVE, COLD, EVACUATE, OFFLOAD, ADOPT, SKIP, FAIL, NONE, UNMOVABLE = (
    'live', 'cold', 'evacuate', 'offload', 'adopt', 'skip', 'fail', 'none', 'unmovable')
MOVES = (LIVE, COLD, EVACUATE, OFFLOAD, ADOPT)
DEADLINE_RETRY_SECONDS = 2.0
POLICIES = ('move', 'skip', 'fail')
# What the record says of each instance at the end of a run (check mode also says 'planned').
OUTCOMES = ('moved', 'already_done', 'skipped', 'failed', 'in_flight', 'not_started')


class MoveHandle(object):
    """One move in flight.  The core sets the timing fields; a backend keeps its own in `data`."""

    def __init__(self, subject, move, target_host=None, **data):
        self.id = subject.id
        self.subject = subject
        self.move = move
        self.target_host = target_host
        self.data = data
        self.started = None          # monotonic
        self.started_wall = None     # epoch seconds
        self.deadline_at = None
        self.deadline_acted = None   # 'abort' | 'force_complete' once acted on
        self.give_up_at = None       # monotonic: past this, the run stops following the move
        self.attempts = []           # moves tried before this one (e.g. ['live'] before a cold fallback)


class MoveBackend(abc.ABC):
    """The interface the core drives.  OpenStack: openstack/moves.py; libvirt: libvirt/moves.py."""

    name = None
    default_window = 1

    @abc.abstractmethod
    def location(self):
        """See the module docstring."""

    def request_count(self):
        return None

    def get_service(self, host):
        """The host's compute service as a dict {id, host, binary, status (enabled|disabled),
        state (up|down), disabled_reason, forced_down}, or None when the backend has no such notion."""
        return None

    def set_service(self, host, disabled=None, reason=None, forced_down=None):
        """Change the service (None = leave that part alone); returns the service dict after."""
        raise NotImplementedError

    @abc.abstractmethod
    def list_on_host(self, host):
        """[MoveSubject] on `host`, including instances whose move off it is in flight."""

    def plan_move(self, subject, request):
        """Decision for one subject (start from policy_decision(subject, request))."""
        return policy_decision(subject, request)

    @abc.abstractmethod
    def start_move(self, subject, move, target_host, options):
        """Send the move; returns a MoveHandle.  Raise errors.BackendError when refused."""

    def adopt(self, subject):
        """A MoveHandle for a move already in flight (found by a rerun), or None if there is none."""
        return None

    @abc.abstractmethod
    def poll(self, handles):
        """ONE shared read for all handles: {handle.id: MoveStatus}.  A missing id means no news.  It may
        raise any errors.VmopsError: the core keeps the moves and reads again next cycle (retry_budget)."""

    @abc.abstractmethod
    def abort(self, handle):
        """See the module docstring."""

    @abc.abstractmethod
    def force_complete(self, handle):
        """See the module docstring."""

    def finish(self, handle, status):
        """Settle a done move (confirm a cold move, restore the power state, unlock); returns the final
        MoveStatus.  Also called for a failed move, to undo what start_move did (unlock ...)."""
        return status

    def abandon(self, handle, message):
        """The core stops following this move (still in flight; it goes on in the backend): undo what
        start_move did that must not outlive the run (e.g. a lock); returns `message`, with what was undone."""
        return message

    def can_cold_fallback(self, handle, status):
        """None when a live move aborted at its deadline may be retried cold, else the reason why not."""
        return None

    def release_stale_locks(self, host):
        """Release the locks a run of ours on `host` took and did not live to release (it was killed),
        on servers no longer on the host; never a lock with another reason.  Called once per run,
        not in check mode; returns [{id, name, reason}] of the locks released."""
        return []

    def locate(self, ref):
        """Where an instance named by name or ID is: {'host': host or None (no host)}, or None when it does not
        exist.  Backends that cannot look beyond the host answer {'host': None}."""
        return {'host': None}

    def check_targets(self, request):
        """Refuse (errors.InvalidRequest) a target_host or reserved_host the run cannot use, before anything
        changes.  Backends without such a notion accept everything."""
        return None

    def prepare_reserved_host(self, request, check_mode):
        """Make request.reserved_host ready to receive the instances (OpenStack: enable its service, add it to
        the failed host's aggregates); returns {host, changes, ...} (check mode: what it would change)."""
        if request.reserved_host:
            raise NotImplementedError('reserved_host is not supported by the %s backend' % self.name)
        return None

    def capacity(self, host, subjects):
        """Room on the candidate hosts: [{host, fits (bool or None), free: {...}, needed: {...}}]."""
        return []

    def source_watch(self, request):
        """A SourceWatch on request.host, created once the service changes are applied, or None when the
        backend has no way to tell whether its host lives."""
        return None


# Why a SourceWatch stops a run.
SOURCE_DOWN = 'source_down'         # a drain's source died: moves sent to it fail or hang
SOURCE_ALIVE = 'source_alive'       # an evacuated host is running: its guests would run on two hosts
HOLD = 'hold'                       # not yet: send nothing until the next check (e.g. a heartbeat still young)


class SourceWatch(abc.ABC):
    """Whether the host being emptied is still what the run assumes.  `every`: the least number of
    seconds between two checks (each is one read)."""

    every = 5.0

    @abc.abstractmethod
    def check(self):
        """None while the run may go on, (HOLD, why, None) while nothing may be sent yet, else (SOURCE_DOWN or
        SOURCE_ALIVE, a message saying what was seen and what to do, since): `since` dates what was seen in epoch seconds of this machine's clock (moves
        sent after it are named in the record), or None.  May raise errors.VmopsError: the check is then
        tried again later."""


# The neutral policy table ----------------------------------------------------------------------

def policy_decision(subject, request):
    """What the options say about one instance, before any backend specifics."""
    state = subject.state
    if request.instances and subject.id not in request.instances and subject.name not in request.instances:
        return Decision(NONE, 'not in instances')
    if subject.task and subject.details.get('move_in_flight'):
        return Decision(ADOPT, None, 'a move started earlier is in flight (%s)' % subject.task)
    if state == states.SHELVED_OFFLOADED or state == states.ABSENT:
        return Decision(NONE, 'has no host')
    if state == states.ERROR:
        policy = request.error_policy
    elif request.mode == 'evacuate':
        return Decision(EVACUATE)
    else:
        policy = request.policy_for(state) or 'move'
    if policy == 'skip':
        return Decision(SKIP, '%s (%s_policy=skip)' % (state, _policy_name(state)))
    if policy == 'fail':
        return Decision(FAIL, '%s (%s_policy=fail)' % (state, _policy_name(state)))
    if request.mode == 'evacuate':
        return Decision(EVACUATE)
    if state in (states.RUNNING, states.PAUSED):
        return Decision(LIVE)
    if state == states.STOPPED:
        return Decision(COLD)
    if state == states.SUSPENDED:
        return Decision(LIVE, None, 'resumed, moved live, suspended again')
    if state == states.SHELVED:
        return Decision(OFFLOAD, None, 'offloaded: unshelve places it anew')
    if state == states.RESCUED:
        return Decision(LIVE, None, 'unrescued, moved live, rescued again')
    if state == states.ERROR:
        return Decision(COLD, None, 'error_policy=move')
    return Decision(FAIL, 'state %s cannot be moved' % state)


def _policy_name(state):
    return {states.SUSPENDED: 'suspended', states.SHELVED: 'shelved', states.RESCUED: 'rescued',
            states.ERROR: 'error'}.get(state, state)
