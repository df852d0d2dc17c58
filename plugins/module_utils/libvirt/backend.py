# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt backend: one kept connection per module run (connection.py), domains found by name or UUID."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import threading
import uuid

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Backend, Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import connection, power
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import (
    LibvirtConnection, act, libvirt, redact_uri)

# What common.py asks every backend package (the library is imported once, in connection.py).
LIBRARY, LIBRARY_IMPORT_ERROR = connection.LIBRARY, connection.LIBRARY_IMPORT_ERROR
HAS_LIBRARY = connection.HAS_LIBRARY
# Where a run connects when neither libvirt_uri nor LIBVIRT_DEFAULT_URI says.
DEFAULT_URI = 'qemu:///system'

t = states.transition
MODEL = states.BackendModel('libvirt', (
    states.RUNNING, states.STOPPED, states.PAUSED, states.SUSPENDED, states.ERROR, states.ABSENT,
), (
    # Declaration order breaks ties between plans of equal length: gentle verbs first.
    t('start', states.STOPPED, states.RUNNING),
    t('shutdown', states.RUNNING, states.STOPPED, fallback='destroy'),
    t('destroy', states.RUNNING, states.STOPPED, forced=True),
    t('pause', states.RUNNING, states.PAUSED),
    t('resume', states.PAUSED, states.RUNNING),
    t('managed_save', states.RUNNING, states.SUSPENDED),
    t('managed_save', states.PAUSED, states.SUSPENDED),
    t('restore', states.SUSPENDED, states.RUNNING),
    t('destroy', states.PAUSED, states.STOPPED, forced=True),
    t('discard_saved_state', states.SUSPENDED, states.STOPPED, forced=True),
    t('undefine', states.STOPPED, states.ABSENT),
    t('undefine_discarding_saved_state', states.SUSPENDED, states.ABSENT, forced=True),
    t('destroy', states.ERROR, states.STOPPED, forced=True),
    t('reboot_soft', states.RUNNING, states.RUNNING),
    t('reboot_hard', states.RUNNING, states.RUNNING),
))


def host_uuid(conn):
    """The hypervisor's host UUID (from its capabilities): tells two URIs of one host apart from two hosts."""
    match = re.search(r'<host>\s*<uuid>([^<]+)</uuid>', conn.getCapabilities())
    return match.group(1) if match else None


def _uuid_or_none(text):
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError, AttributeError):
        return None


class _RebootWatch(object):
    """Counts libvirt reboot events per domain, so a soft reboot is done only when the guest did it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}

    def on_reboot(self, conn, dom, opaque):  # signature fixed by libvirt; pylint: disable=unused-argument
        with self._lock:
            self._counts[dom.UUIDString()] = self._counts.get(dom.UUIDString(), 0) + 1

    def count(self, domain_uuid):
        with self._lock:
            return self._counts.get(domain_uuid, 0)


class LibvirtBackend(Backend):
    model = MODEL

    @classmethod
    def from_params(cls, params):
        """The backend for the module options: libvirt_uri, else LIBVIRT_DEFAULT_URI as libvirt reads it."""
        return cls(params.get('libvirt_uri') or os.environ.get('LIBVIRT_DEFAULT_URI') or DEFAULT_URI,
                   retry_budget=params.get('retry_budget'))

    def __init__(self, uri, retry_budget=None, connection=None):
        self.uri = uri
        self._reboots = _RebootWatch()
        # The run's one connection, kept across libvirtd restarts; the other libvirt files of the run
        # (snapshot, rescue, restore) use it through `conn`.  (`connection`: one made by a test.)
        self.conn = connection or LibvirtConnection(uri, retry_budget)
        self.conn.register_event(libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboots.on_reboot)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def bound_by(self, deadline):
        """No retry across a reconnect goes past the run's deadline."""
        self.conn.deadline = deadline

    def request_count(self):
        return self.conn.request_count() if self.conn is not None else None

    def location(self):
        return redact_uri(self.uri)

    def find(self, identifier):
        """Look the domain up by UUID (if it looks like one), then by name; never list all domains."""
        lookups = [self.conn.lookupByName]
        if _uuid_or_none(identifier):
            lookups.insert(0, lambda text: self.conn.lookupByUUIDString(_uuid_or_none(text)))
        for lookup in lookups:
            try:
                return lookup(identifier)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise BackendError('Looking up domain %s at %s failed: %s'
                                       % (identifier, self.location(), error.get_error_message()))
        return None

    def observe(self, ref):
        name, domain_uuid = ref.name(), ref.UUIDString()     # kept client-side: no call to libvirtd
        try:
            code, reason = ref.state()
            saved = code == libvirt.VIR_DOMAIN_SHUTOFF and ref.hasManagedSaveImage(0)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return Observation(name, domain_uuid, states.ABSENT, None, None, {})
            raise BackendError('Reading the state of %s failed: %s' % (name, error.get_error_message()))
        state, task, fault = _interpret(code, reason, saved)
        # One state() call per poll (plus hasManagedSaveImage() when shut off): waits stay cheap.
        details = {'libvirt_state': _STATE_NAMES.get(code, str(code)), 'libvirt_reason': reason,
                   'reboots_seen': self._reboots.count(domain_uuid)}
        return Observation(name, domain_uuid, state, task, fault, details)

    def perform(self, ref, verb, options=None):
        action = getattr(self, '_verb_' + verb)
        try:
            return action(ref)
        except libvirt.libvirtError as error:
            raise BackendError('libvirt refused %s of %s: %s' % (verb, ref.name(), error.get_error_message()),
                               verb=verb, libvirt_error_code=error.get_error_code())

    # One method per verb of MODEL.  Each returns None, or an extra readiness check.

    # An action whose answer a dropped connection lost is sent again only when the re-read (`verify`)
    # shows it did not take effect; a reboot cannot be told from the state, so it is never sent twice.

    def _verb_start(self, dom):
        power.start(dom)

    _verb_restore = _verb_start     # starting a domain that has a managed save image restores it

    def _verb_shutdown(self, dom):
        power.shutdown(dom)

    def _verb_destroy(self, dom):
        power.destroy(dom)

    def _verb_pause(self, dom):
        act(dom, 'suspend', verify=lambda: dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED)

    def _verb_resume(self, dom):
        act(dom, 'resume', verify=lambda: dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED)

    def _verb_managed_save(self, dom):
        # Whatever state it was saved from, a restore should bring the guest back running.
        act(dom, 'managedSave', (libvirt.VIR_DOMAIN_SAVE_RUNNING,),
            verify=lambda: not dom.isActive() and dom.hasManagedSaveImage(0))

    def _verb_discard_saved_state(self, dom):
        act(dom, 'managedSaveRemove', (0,), verify=lambda: not dom.hasManagedSaveImage(0))

    def _verb_undefine(self, dom, flags=0):
        # Disks and NVRAM stay on the host: removing the definition must never delete data.
        # (KEEP_NVRAM is passed only when there is one: not every driver accepts the flag.)
        if '<nvram' in dom.XMLDesc(0):
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        act(dom, 'undefineFlags', (flags,), verify=lambda: _undefined(dom))

    def _verb_undefine_discarding_saved_state(self, dom):
        self._verb_undefine(dom, libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)

    def _verb_reboot_soft(self, dom):
        seen = self._reboots.count(dom.UUIDString())
        dom.reboot(0)   # asks the guest (agent or ACPI); done when libvirt reports the reset

        def rebooted(observation):
            return observation.details.get('reboots_seen', 0) > seen
        rebooted.waiting_for = 'the guest to reboot: no reboot event from libvirt yet'
        return rebooted

    def _verb_reboot_hard(self, dom):
        dom.reset(0)


def _undefined(dom):
    try:
        return not dom.isPersistent()
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return True
        raise


_STATE_NAMES = {}
_BUSY_PAUSE_REASONS = {}
if HAS_LIBRARY:
    _STATE_NAMES = {
        libvirt.VIR_DOMAIN_NOSTATE: 'nostate', libvirt.VIR_DOMAIN_RUNNING: 'running',
        libvirt.VIR_DOMAIN_BLOCKED: 'blocked', libvirt.VIR_DOMAIN_PAUSED: 'paused',
        libvirt.VIR_DOMAIN_SHUTDOWN: 'shutdown', libvirt.VIR_DOMAIN_SHUTOFF: 'shutoff',
        libvirt.VIR_DOMAIN_CRASHED: 'crashed', libvirt.VIR_DOMAIN_PMSUSPENDED: 'pmsuspended',
    }
    # libvirt pauses a guest by itself while it works on it; such a pause is a task, not a state.
    _BUSY_PAUSE_REASONS = {
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION: 'migrating', libvirt.VIR_DOMAIN_PAUSED_SAVE: 'saving',
        libvirt.VIR_DOMAIN_PAUSED_DUMP: 'dumping', libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: 'snapshotting',
        libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: 'shutting_down',
        libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: 'starting_up',
    }


def _interpret(code, reason, has_saved_image):
    """Map libvirt's (state, reason) to the core's (state, task, fault)."""
    if code in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return states.RUNNING, None, None
    if code == libvirt.VIR_DOMAIN_PAUSED:
        if reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR:
            return states.ERROR, None, 'paused by the hypervisor after a disk I/O error'
        if reason in _BUSY_PAUSE_REASONS:
            return states.PAUSED, _BUSY_PAUSE_REASONS[reason], None
        return states.PAUSED, None, None
    if code == libvirt.VIR_DOMAIN_SHUTDOWN:
        return states.RUNNING, 'shutting_down', None
    if code == libvirt.VIR_DOMAIN_SHUTOFF:
        return (states.SUSPENDED if has_saved_image else states.STOPPED), None, None
    if code == libvirt.VIR_DOMAIN_CRASHED:
        return states.ERROR, None, 'the guest crashed'
    if code == libvirt.VIR_DOMAIN_PMSUSPENDED:
        return states.ERROR, None, 'the guest put itself to sleep (ACPI S3); wake it with virsh dompmwakeup'
    return states.RUNNING, 'unknown', None     # NOSTATE: libvirt does not know yet; wait for it
