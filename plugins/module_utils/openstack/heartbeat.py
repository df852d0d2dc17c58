# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether the compute being emptied lives, from its service record (host_evacuate's SourceWatch).

A nova-compute writes its service record every `report_interval` (10 s by default): the record's
`updated_at` is its heartbeat.  Nova calls a compute down only after `service_down_time` (60 s by
default) without one, and a forced-down service reads down whatever its compute does, so the watch
reads the heartbeat itself, in the cloud's clock (the response's Date header):

  drain       the source died: Nova reports it down, or its heartbeat is older than SILENT_AFTER (or 3
              times the longest gap seen between two heartbeats in this run, for clouds that report less
              often).  Moves sent to a dead source fail (Nova refuses them, or its conductor times out
              and leaves the server in ERROR) or hang, so the drain stops sending.
  evacuation  the host is alive: a heartbeat newer than the one read once the service was forced down
              (the run's own update moves it too, so the first read comes after it), a service that is
              not forced down and reads up, or, sooner than its first heartbeat, an evacuation record off
              the host gone to `completed` (the drain's shared read already has them: no extra request),
              which only the host's nova-compute does, as it starts.  Before the first evacuation is sent,
              the host must have been silent for SILENT_AFTER: a service record written less than that ago
              (before this run changed it) may be a compute still alive, so the run holds and watches.
              A compute that died just now costs the evacuation those seconds; one that is alive is caught
              before anything is sent.  An instance evacuated off a live host runs on both hosts
              until that host's nova-compute restarts, so the evacuation stops.

Each check is one GET /os-services?host=H&binary=nova-compute.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.move_backend import (
    HOLD, SOURCE_ALIVE, SOURCE_DOWN, SourceWatch)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.migrations import clock_offset, epoch, iso

SILENT_AFTER = 30.0     # seconds: three of Nova's default report intervals


class ServiceHeartbeat(SourceWatch):
    """The SourceWatch of an OpenStack drain or evacuation.  `read()` returns (service body, the cloud's
    clock minus ours or None); its first call is the baseline."""

    def __init__(self, read, host, mode, clock=time.time, completed_evacuations=None, heard_before=None):
        self.read = read
        self.heard_before = heard_before    # the record's updated_at before this run changed it (cloud epoch)
        self.silence_proven = mode != 'evacuate'
        self.completed_evacuations = completed_evacuations    # () -> [(instance uuid, cloud epoch)]
        self.host = host
        self.mode = mode
        self.clock = clock
        self.every = 5.0 if mode == 'drain' else 2.0
        body, offset = read()
        self.first_beat = self.last_beat = epoch(body.get('updated_at'))
        self.longest_gap = 0.0
        self.offset = offset

    def check(self):
        body, offset = self.read()
        if offset is not None:
            self.offset = offset
        beat = epoch(body.get('updated_at'))
        if beat is not None and self.last_beat is not None and beat > self.last_beat:
            self.longest_gap = max(self.longest_gap, beat - self.last_beat)
        if beat is not None:
            self.last_beat = beat
        if self.mode == 'evacuate':
            return self._alive(body, beat)
        return self._dead(body, beat)

    def _alive(self, body, beat):
        cleaned = [moment for _uuid, moment in (self.completed_evacuations() if self.completed_evacuations else [])
                   if moment is not None and self.first_beat is not None and moment >= self.first_beat]
        if cleaned:
            beat = min(cleaned)
            seen = ('it removed its copy of %d evacuated instance(s) at %s, as a nova-compute does when it starts'
                    % (len(cleaned), iso(beat)))
        elif beat is not None and self.first_beat is not None and beat > self.first_beat:
            seen = 'its heartbeat moved from %s to %s' % (iso(self.first_beat), iso(beat))
        elif body.get('state') == 'up' and not body.get('forced_down'):
            seen = 'Nova reports it up'
        else:
            return self._hold()
        return (SOURCE_ALIVE,
                'nova-compute on %s is running (%s while the evacuation ran): the host is not fenced, so the '
                'evacuation stopped sending (the evacuations in flight were followed to their end). Power the '
                'host off (fence it) before running it again: an instance evacuated off a running host runs on '
                'both hosts until the host is off, or until its nova-compute restarts and removes its copies'
                % (self.host, seen),
                self._ours(beat))

    def _hold(self):
        """Before the first evacuation: wait until the host has been silent for SILENT_AFTER."""
        if self.silence_proven:
            return None
        # The record as it was before this run's own update (which moves updated_at too).
        last = self.heard_before if self.heard_before is not None else self.first_beat
        if last is None or self.offset is None:
            self.silence_proven = True
            return None
        quiet = self.clock() + self.offset - last
        if quiet > SILENT_AFTER:
            self.silence_proven = True
            return None
        return (HOLD, 'waiting until %s has been silent for %.0f s before evacuating it (its service record was '
                'written %.0f s ago)' % (self.host, SILENT_AFTER, quiet), None)

    def _dead(self, body, beat):
        if body.get('state') == 'down' or body.get('forced_down'):
            seen = 'Nova reports its service down%s (last heartbeat %s)' % (
                ', forced down' if body.get('forced_down') else '', iso(beat) if beat else 'unknown')
        else:
            now = self.clock() + (self.offset or 0.0)
            if beat is None or self.offset is None:
                return None     # no clock to age the heartbeat with: wait for Nova's verdict
            silent = now - beat
            limit = max(SILENT_AFTER, 3 * self.longest_gap)
            if silent <= limit:
                return None
            seen = ('it has sent no heartbeat for %.0f s (last %s; Nova still reports it up and calls it down after '
                    'its service_down_time, 60 s by default)' % (silent, iso(beat)))
        # No moment to name the moves by: the compute died some time after its last heartbeat.
        return (SOURCE_DOWN,
                'the source compute %s looks dead: %s. The drain stopped sending: moves to a dead compute fail or '
                'hang. Fence the host and evacuate it (the disaster_recovery role, or host_evacuate mode=evacuate '
                'fenced=true), or start its nova-compute again and rerun the drain' % (self.host, seen),
                None)

    def _ours(self, cloud_epoch):
        """A cloud-clock moment in this machine's clock (None when either is unknown)."""
        if cloud_epoch is None or self.offset is None:
            return None
        return cloud_epoch - self.offset


def service_reader(call, host, microversion):
    """read() for ServiceHeartbeat over the backend's `call(method, path, microversion=, params=)` (one request)."""
    def read():
        response = call('GET', '/os-services', microversion=microversion,
                        params={'host': host, 'binary': 'nova-compute'})
        found = [s for s in response.json()['services'] if s.get('host') == host]
        if not found:
            return {}, clock_offset(response)
        return found[0], clock_offset(response)
    return read
