# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's compute service during a drain: read and checked first, disabled (or forced down) before the
first move, enabled again when the run fails and disabled it (`restore_service_on_failure`).

A backend without a service notion (libvirt) returns None from get_service: nothing is changed or restored.
A restore that fails is tried again a few times within `retry_budget` (the request layer also retries
each call); when it still fails, the report says `still_disabled`, the error, and the remedy.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest, VmopsError

RESTORE_TRIES = 3
RESTORE_PAUSE = 2.0     # seconds before the 2nd try; doubled before the 3rd


class HostService(object):

    def __init__(self, backend, request, clock):
        self.backend = backend
        self.request = request
        self.clock = clock
        self.before = None
        self.after = None
        self.changed = False         # a change was sent (or may have been)
        self.disabled_by_us = False  # this run disabled it (or may have): a failed run enables it again
        self.restored = False
        self.restore_error = None
        self.restore_tries = 0

    def read(self):
        """Read the service and refuse a mode its state rules out (a drain of a down host, an evacuation of an up one)."""
        request = self.request
        self.before = service = self.backend.get_service(request.host)
        if service is None:
            return
        if request.mode == 'evacuate':
            if service['state'] == 'up' and not service.get('forced_down'):
                if not (request.fenced and request.force_down):
                    raise InvalidRequest(
                        'Refusing to evacuate %s: its %s service reports up. Evacuate only a host that is down; if '
                        'it is fenced (powered off / isolated) but still reported up, say fenced=true and '
                        'force_down=true.' % (request.host, service.get('binary')), service=service)
        elif service['state'] == 'down' or service.get('forced_down'):
            raise InvalidRequest('%s is down (its %s service reports down%s): nothing can be migrated off it; use '
                                 'mode=evacuate.' % (request.host, service.get('binary'),
                                                     ', forced down' if service.get('forced_down') else ''),
                                 service=service)

    def planned_changes(self):
        """What the run will change on the service, from the read alone."""
        request, service = self.request, self.before
        if service is None:
            return {}
        changes = {}
        if request.disable and service['status'] != 'disabled':
            changes['disabled'] = True
            changes['reason'] = request.disabled_reason or 'vmops host_evacuate %s' % request.mode
        if request.mode == 'evacuate' and request.force_down and not service.get('forced_down'):
            changes['forced_down'] = True
        return changes

    def apply(self, changes):
        if not changes:
            self.after = self.before
            return
        try:
            self.after = self.backend.set_service(self.request.host, disabled=changes.get('disabled'),
                                                  reason=changes.get('reason'), forced_down=changes.get('forced_down'))
        except VmopsError as error:
            if error.details.get('sent') == 'maybe':    # it may have taken effect: count it, and undo it on failure
                self.changed = True
                self.disabled_by_us = bool(changes.get('disabled'))
            raise
        self.changed = True
        self.disabled_by_us = bool(changes.get('disabled'))

    def restore(self):
        """Enable the service this run disabled: up to RESTORE_TRIES tries, none starting past `retry_budget`."""
        started = self.clock.monotonic()
        for attempt in range(1, RESTORE_TRIES + 1):
            self.restore_tries = attempt
            try:
                self.after = self.backend.set_service(self.request.host, disabled=False)
            except VmopsError as error:
                self.restore_error = error.msg
            else:
                self.disabled_by_us = False
                self.restored = True
                self.restore_error = None
                return
            pause = RESTORE_PAUSE * (2 ** (attempt - 1))
            if attempt == RESTORE_TRIES or self.clock.monotonic() + pause - started > self.request.retry_budget:
                return
            self.clock.sleep(pause)

    def still_disabled(self):
        """True when this run disabled the service, the run failed, and enabling it again failed."""
        return self.disabled_by_us and self.restore_error is not None

    def remedy(self):
        host = self.request.host
        return ('vmops.lifecycle.host_service host=%s state=enabled (or: openstack compute service set --enable '
                '%s nova-compute)' % (host, host))

    def report(self, check_mode=False, would_change=None):
        out = {'before': self.before, 'after': self.before if check_mode else self.after}
        if check_mode:
            out['would_change'] = would_change or {}
        if self.restored:
            out['restored'] = True
        if self.still_disabled():
            out.update(still_disabled=True, restore_error=self.restore_error, restore_tries=self.restore_tries,
                       remedy=self.remedy())
        return out
