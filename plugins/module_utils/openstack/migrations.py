# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drain's view of Nova's migration records and of the cloud's clock (see moves.py's docstring):
which record belongs to which move, what a record alone says, and where the shared servers read
starts (its changes-since cursor)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import time
from email.utils import parsedate_tz, mktime_tz

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states

CLOCK_SKEW_MARGIN = 60          # seconds subtracted from "now" for changes-since (cloud clocks differ)
# Seconds before the oldest move in flight that the shared read starts from, once the cloud's clock is
# known: covers the Date header's 1 s resolution and the API's and database's clocks differing a little.
CURSOR_MARGIN = 5
# A migration record counts as this move's when created no earlier than this before the move was sent
# (in the cloud's clock, whose estimate errs early by up to a second).
RECORD_MATCH_SLACK = 2
# Seconds a live move may go without its migration record before the servers list is read for it (a
# move refused before the conductor created a record would otherwise wait for its deadline).
RECORDLESS_GRACE = 3.0
# Migration record statuses of a move the compute is still working on ('finished' is a cold migration
# waiting for its confirm: the server shows VERIFY_RESIZE, which the step machine handles).
MIGRATION_IN_PROGRESS = ('queued', 'preparing', 'running', 'accepted', 'pre-migrating', 'migrating', 'post-migrating',
                         'confirming')

# What record_status() says when the record alone cannot tell: read the server.
ASK_THE_SERVER = object()


class MigrationRecords(object):
    """Migration records off one host, in the cloud's clock."""

    def __init__(self, call):
        self._call = call
        self.host = None
        self.since = None
        self.cloud_offset = None     # the cloud's clock minus ours, from a Date header (None: unknown)
        self.missed = False          # the last shared read left out a move in flight
        # Evacuations off the host whose record went to `completed`: only the source's nova-compute does that,
        # as it starts and removes its copies of evacuated instances.  [(instance_uuid, updated_at epoch)]
        self.completed_evacuations = []

    def start(self, host, response):
        """The run's first read of the host: the broad cursor, and the cloud's clock from its Date header."""
        self.host = host
        self.since = time.time() - CLOCK_SKEW_MARGIN
        self.cloud_offset = clock_offset(response)

    def latest(self):
        """instance_uuid -> its newest migration record off the host, changed since the run started (a
        minute's margin: the list holds one record per move, it stays light)."""
        params = {'source_compute': self.host, 'changes-since': iso(self.since or time.time() - CLOCK_SKEW_MARGIN)}
        latest = {}
        for record in self._call('GET', '/os-migrations', params=params).json()['migrations']:
            if record.get('migration_type') == 'evacuation' and record.get('status') == 'completed':
                seen = (record['instance_uuid'], epoch(record.get('updated_at')))
                if seen not in self.completed_evacuations:
                    self.completed_evacuations.append(seen)
            known = latest.get(record['instance_uuid'])
            if known is None or record['id'] > known['id']:
                latest[record['instance_uuid']] = record
        return latest

    def record_status(self, handle, record):
        """What the migration record alone says of a live move or a confirm: a done MoveStatus, None while
        it goes on, or ASK_THE_SERVER (any other step, a record that ended badly, none yet after a grace)."""
        step = handle.data['steps'][handle.data['step']]
        move = handle.data.get('resolved_move', handle.move)
        mark = handle.data.get('changed_after')
        if mark is None or (move, step) not in ((moves.LIVE, 'move'), (moves.COLD, 'confirm')):
            return ASK_THE_SERVER
        created = epoch(record.get('created_at')) if record else None
        if created is None or created < mark - RECORD_MATCH_SLACK:
            # None yet (the conductor creates it a moment after the API accepts), or an earlier move's.
            recordless = time.monotonic() - handle.data.get('sent_at', 0)
            return ASK_THE_SERVER if recordless > RECORDLESS_GRACE else None
        handle.data['migration_id'] = record.get('id')
        status = record['status']
        if move == moves.LIVE and status == 'completed':
            return moves.MoveStatus(True, False, None, record.get('dest_compute'), state_while_moving(handle))
        if move == moves.COLD and status == 'confirmed':
            return moves.MoveStatus(True, False, None, record.get('dest_compute'), handle.data['state_before'])
        if status in MIGRATION_IN_PROGRESS or status == 'finished':
            return None
        return ASK_THE_SERVER      # error, failed, cancelled: the server says where it is and why

    def cloud_now(self):
        """Now in the cloud's clock, or None when its offset is unknown."""
        return None if self.cloud_offset is None else time.time() + self.cloud_offset

    def cursor(self, handles):
        """changes-since for the shared read: just before the oldest move in flight, in the cloud's clock;
        the run's start less CLOCK_SKEW_MARGIN (in ours) when any of them cannot be placed in the cloud's
        clock, or when the last read left one out."""
        broad = self.since or time.time() - CLOCK_SKEW_MARGIN
        marks = [h.data.get('changed_after') for h in handles]
        if self.missed or not marks or any(mark is None for mark in marks):
            return broad
        return min(marks) - CURSOR_MARGIN


def state_while_moving(handle):
    """A live move keeps the power state it began in: the original one, or running after a resume or
    an unrescue step."""
    earlier = handle.data['steps'][:handle.data['step']]
    return states.RUNNING if ('resume' in earlier or 'unrescue' in earlier) else handle.data['state_before']


def iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


def epoch(text):
    """Nova's ISO 8601 UTC timestamp ('2026-11-21T20:14:03Z') as epoch seconds, None if unreadable."""
    try:
        return calendar.timegm(time.strptime((text or '').rstrip('Z')[:19], '%Y-%m-%dT%H:%M:%S'))
    except ValueError:
        return None


def clock_offset(response):
    """The cloud's clock minus ours, from the response's Date header (None without one).  The header is
    whole seconds, truncated, so the estimate errs early, the safe side for changes-since."""
    parsed = parsedate_tz((getattr(response, 'headers', None) or {}).get('Date') or '')
    if parsed is None:
        return None
    return mktime_tz(parsed) - time.time()
