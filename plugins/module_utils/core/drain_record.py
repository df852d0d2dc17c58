# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The record of a drain: one entry per instance, kept as the run goes, so a run that fails still says everything.

Outcomes (move_backend.OUTCOMES): moved, already_done, skipped, failed (with the reason), in_flight (still
moving in the backend when the run ended early; a rerun adopts it; `migration_id` when known),
not_started (a planned move never sent); `planned` in check mode.  With `progress_file`, each entry is
also appended there as one JSON line.

Two keys a backend may leave in `handle.data` for the record: `places` ({host: state}, where the instance
was found on each host once its move ended, `unknown` for a host that could not be read) is reported as
the entry's `places`; `report` ({key: value}) adds facts of the backend's own to the entry (a libvirt
evacuation's `data_as_of` and `steps`); `changed: False` on a failed move says that it left everything as it was (the
instance where and as it was, nothing left behind), so that it does not count as a change.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import json
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import ADOPT, OUTCOMES

# Outcomes that show something was sent for the instance (with `failed` when a move had been started).
ACTED = ('moved', 'already_done', 'in_flight')


class DrainRecord(object):

    def __init__(self, request, clock):
        self.request = request
        self.clock = clock
        self.servers = collections.OrderedDict()    # instance id -> entry
        self.maybe_sent = False     # a request that may have taken effect failed (sent: maybe)
        self.unchanged = set()      # ids of failed moves that provably left everything as it was

    def add(self, subject, move, outcome, message=None, handle=None, status=None, state_after=None, to=None,
            started_wall=None, attempts=None):
        clock = self.clock
        started = handle.data.get('first_started', handle.started) if handle else None
        wall_started = handle.data.get('first_started_wall', handle.started_wall) if handle else started_wall
        seconds = round(clock.monotonic() - started, 3) if started is not None else None
        if outcome == 'moved' and move == ADOPT:
            outcome = 'already_done' if handle and handle.data.get('was_done') else 'moved'
        entry = {
            'name': subject.name, 'id': subject.id, 'from': subject.host,
            'to': to if to is not None else (status.host if status else None),
            'move': handle.data.get('resolved_move', move) if handle else move,
            'attempts': (handle.attempts if handle else list(attempts or [])) + ([move] if handle else []),
            'state_before': subject.details.get('state_before', subject.state),
            'state_after': state_after if state_after is not None else (status.state if status else None),
            'locked': subject.locked,
            'started': _iso(wall_started) if wall_started else None,
            'finished': _iso(clock.wall()) if outcome not in ('planned', 'in_flight', 'not_started') else None,
            'seconds': seconds, 'outcome': outcome, 'message': message,
        }
        if handle is not None and handle.deadline_acted:
            entry['deadline_action'] = handle.deadline_acted
        elif handle is not None and handle.data.get('fallback_note'):
            entry['deadline_action'] = 'abort'
        if outcome == 'in_flight':
            entry['migration_id'] = handle.data.get('migration_id') or handle.subject.details.get('migration_id')
        if handle is not None and handle.data.get('places'):
            entry['places'] = dict(handle.data['places'])
        if handle is not None and handle.data.get('report'):
            entry.update(handle.data['report'])
        if outcome == 'failed' and handle is not None and handle.data.get('changed') is False:
            self.unchanged.add(subject.id)
        else:
            self.unchanged.discard(subject.id)
        self.servers[subject.id] = entry
        if outcome != 'planned':
            self._progress(entry)

    def with_outcome(self, outcome):
        return [entry for entry in self.servers.values() if entry['outcome'] == outcome]

    def counts(self):
        """{outcome: how many}, for every outcome and `planned`."""
        counts = dict((outcome, 0) for outcome in OUTCOMES + ('planned',))
        for entry in self.servers.values():
            counts[entry['outcome']] = counts.get(entry['outcome'], 0) + 1
        return counts

    def sent_anything(self):
        """True when a move was sent (started, adopted and settled, or in flight) or may have been."""
        return self.maybe_sent or any(
            entry['outcome'] in ACTED or (entry['outcome'] == 'failed' and entry['seconds'] is not None
                                          and entry['id'] not in self.unchanged)
            for entry in self.servers.values())

    def _progress(self, entry):
        path = self.request.progress_file
        if not path:
            return
        line = dict(entry, host=self.request.host, done=len(self.servers))
        with open(path, 'a') as stream:
            stream.write(json.dumps(line, sort_keys=True) + '\n')


def _iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(epoch)) + ('.%03dZ' % int((epoch % 1) * 1000))
