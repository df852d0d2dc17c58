# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The instance state model shared by every backend.

States are the words operators use.  Each backend declares which states it
supports and which verbs move an instance from one state to another; the
planner (planner.py) searches that graph.  Nothing here talks to a hypervisor.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

RUNNING = 'running'
STOPPED = 'stopped'
PAUSED = 'paused'            # guest state kept in the host's memory
SUSPENDED = 'suspended'      # guest state saved to disk (libvirt managed save, Nova suspend)
SHELVED = 'shelved'
SHELVED_OFFLOADED = 'shelved_offloaded'
RESCUED = 'rescued'
RESIZE_PENDING = 'resize_pending'   # Nova VERIFY_RESIZE: waits for confirm or revert
ERROR = 'error'
ABSENT = 'absent'
# Not a state an instance is in: what a result says when the instance could not be read.
UNKNOWN = 'unknown'

ALL_STATES = (RUNNING, STOPPED, PAUSED, SUSPENDED, SHELVED, SHELVED_OFFLOADED,
              RESCUED, RESIZE_PENDING, ERROR, ABSENT)

# States a user may ask for with instance_state (error and resize_pending are only ever observed).
TARGET_STATES = (RUNNING, STOPPED, PAUSED, SUSPENDED, SHELVED, SHELVED_OFFLOADED, RESCUED, ABSENT)

# One edge of a backend's state graph.
#   verb:     the backend operation that performs it ('start', 'pause', ...)
#   source:   the state it leaves
#   target:   the state it reaches
#   forced:   True if it throws away guest state that a graceful path would keep
#             (power off without asking the guest, discard a saved memory image);
#             the planner only uses such edges when the caller asks for a hard stop.
# An edge whose source and target are equal is an action (reboot): the planner
# never walks it, the engine appends it on request.
#   fallback: a verb to use on the same edge when the graceful verb times out,
#             only when the caller opted in (e.g. shutdown -> destroy).
Transition = collections.namedtuple('Transition', 'verb source target forced fallback')


def transition(verb, source, target, forced=False, fallback=None):
    """Build a Transition with the usual defaults."""
    return Transition(verb, source, target, forced, fallback)


class BackendModel(object):
    """What a backend can do: its states and the transitions between them."""

    def __init__(self, name, states, transitions, satisfied_by=None, has_lock=False):
        self.name = name
        self.has_lock = has_lock     # instances carry a lock flag (Observation.details['locked'])
        self.states = frozenset(states)
        self.transitions = tuple(transitions)
        # wanted state -> other states that fulfil it too (shelved is fulfilled by shelved_offloaded)
        self.satisfied_by = dict((wanted, frozenset(others)) for wanted, others in (satisfied_by or {}).items())
        unknown = set()
        for edge in self.transitions:
            unknown.update(s for s in (edge.source, edge.target) if s not in self.states)
        if unknown:
            raise ValueError('%s model: transitions use undeclared states %s' % (name, sorted(unknown)))

    def edges_from(self, state, hard=False):
        """Transitions leaving `state`, in the order the planner should try them.

        Declaration order breaks ties.  Forced edges are left out unless `hard`
        is set; then they come first, because a caller who asked for a hard
        stop wants the power cut, not a polite request.
        """
        leaving = [edge for edge in self.transitions if edge.source == state and edge.source != edge.target]
        if not hard:
            return [edge for edge in leaving if not edge.forced]
        return [edge for edge in leaving if edge.forced] + [edge for edge in leaving if not edge.forced]

    def action(self, verb, state):
        """The self-loop `verb` on `state` (an action that changes nothing in the model, e.g. reboot)."""
        for edge in self.transitions:
            if edge.verb == verb and edge.source == state and edge.target == state:
                return edge
        return None

    def satisfies(self, state, wanted):
        """True if an instance in `state` already is where `wanted` asks it to be."""
        return state == wanted or state in self.satisfied_by.get(wanted, ())

    def supports(self, state):
        return state in self.states

    def verbs(self):
        return sorted(set(edge.verb for edge in self.transitions))
