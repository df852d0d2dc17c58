# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finds the shortest legal sequence of verbs between two states of a backend."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import UnreachableState


def plan_path(model, current, wanted, hard=False):
    """Return the list of Transitions that leads from `current` to `wanted`.

    Breadth-first search, so the plan is the shortest one; among plans of equal
    length the transitions declared first win, which keeps plans stable and
    lets a backend list its preferred verbs first.  Forced transitions (those
    that discard guest state) are used only when `hard` is set, and then preferred.
    An empty list means the instance is already there.
    """
    for state, role in ((current, 'current'), (wanted, 'wanted')):
        if not model.supports(state):
            raise UnreachableState(
                "The %s backend has no %s state '%s'; it knows: %s."
                % (model.name, role, state, ', '.join(sorted(model.states))),
                backend=model.name, current=current, wanted=wanted)
    if model.satisfies(current, wanted):
        return []

    came_from = {current: None}
    queue = collections.deque([current])
    while queue:
        state = queue.popleft()
        for edge in model.edges_from(state, hard=hard):
            if edge.target in came_from:
                continue
            came_from[edge.target] = edge
            if model.satisfies(edge.target, wanted):
                return _walk_back(came_from, edge.target)
            queue.append(edge.target)

    hint = ''
    if not hard and plan_exists(model, current, wanted, hard=True):
        hint = ' It can be reached only by discarding guest state (a hard stop); ask for one to allow it.'
    raise UnreachableState(
        "The %s backend cannot take an instance from '%s' to '%s'.%s" % (model.name, current, wanted, hint),
        backend=model.name, current=current, wanted=wanted)


def plan_exists(model, current, wanted, hard=False):
    """True if some legal plan leads from `current` to `wanted`."""
    try:
        plan_path(model, current, wanted, hard=hard)
    except UnreachableState:
        return False
    return True


def _walk_back(came_from, state):
    path = []
    edge = came_from[state]
    while edge is not None:
        path.append(edge)
        edge = came_from[edge.source]
    path.reverse()
    return path
