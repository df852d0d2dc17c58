# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of a drain or evacuation: one decision per instance found on the host, in the order of the run.

Reads only (the backend's plan_move); check mode reports it as it is.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import (
    ADOPT, COLD, EVACUATE, FAIL, LIVE, MOVES, NONE, OFFLOAD, SKIP, UNMOVABLE)

# entry: the dict the result's `plan` lists; subject: the MoveSubject; decision: the backend's Decision
PlanItem = collections.namedtuple('PlanItem', 'entry subject decision')

# Moves in flight are adopted first, then live moves, cold moves, offloads; by name within each group.
ORDER = {ADOPT: 0, LIVE: 1, EVACUATE: 1, COLD: 2, OFFLOAD: 3, SKIP: 4, UNMOVABLE: 5, FAIL: 5}


class DrainPlan(object):
    """The decisions for the instances on one host, sorted in the order the run takes them."""

    def __init__(self, backend, request, subjects):
        self.host = request.host
        self.items, self.refusals = [], []
        for subject in subjects:
            decision = backend.plan_move(subject, request)
            if decision.move == NONE:
                continue
            entry = {'instance': subject.name, 'id': subject.id, 'move': decision.move, 'from': subject.host,
                     'state': subject.state, 'locked': subject.locked, 'note': decision.note or decision.reason}
            if subject.details.get('disk_fate') is not None:     # evacuations: does the root disk survive
                entry['disk'] = subject.details['disk_fate']
            if decision.move == FAIL:
                self.refusals.append('%s (%s): %s' % (subject.name, subject.id, decision.reason))
            self.items.append(PlanItem(entry, subject, decision))
        self.items.sort(key=lambda item: (ORDER.get(item.decision.move, 9), item.subject.name or '', item.subject.id))

    def entries(self):
        return [item.entry for item in self.items]

    def movers(self):
        """The items the window sends (or adopts)."""
        return [item for item in self.items if item.decision.move in MOVES]

    def unmovable(self):
        return [item for item in self.items if item.decision.move == UNMOVABLE]

    def refuse_if_asked(self, capacity):
        """A `fail` policy refuses the whole run, before anything is touched, naming every instance it applies to."""
        if self.refusals:
            raise InvalidRequest('Nothing was moved: the options refuse to drain %s with these instances on it: %s.'
                                 % (self.host, '; '.join(self.refusals)), plan=self.entries(), capacity=capacity)
