# -*- coding: utf-8 -*-
# Copyright (c) vmops.lifecycle contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Freezing a guest's filesystems through its QEMU guest agent around the start of a backup job.

Shared by instance_snapshot's and instance_backup's libvirt backups: the agent freezes, the job starts
(QEMU takes its point in time when the job starts, so the freeze need not last for the copy), the agent
thaws. A thaw that fails is tried again; a guest that stays frozen is an error that says how to thaw it,
since its applications hang until then.

libvirt waits for an agent's answer forever by default, holding the domain's agent lock, and a freeze it
gave up on still reaches a stalled agent when it wakes up, which then freezes with nobody to thaw it. So
the agent is first asked the time with a short timeout (a harmless command); only an agent that answers
is sent the freeze, with the domain's agent response timeout set (AGENT_TIMEOUT_SECONDS) and put back to
libvirt's default afterwards. A freeze that fails is followed by one short thaw, in case the agent froze
after libvirt stopped waiting.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt

AGENT_CHANNEL = 'org.qemu.guest_agent.0'
THAW_ATTEMPTS = 3
THAW_RETRY_SECONDS = 1.0
AGENT_TIMEOUT_SECONDS = 20
PING_TIMEOUT_SECONDS = 5
AFTER_FAILED_FREEZE_THAW_SECONDS = 5


def agent_connected(tree):
    """True when the domain (its live XML as an element) has the agent's channel and the agent is on it."""
    for channel in tree.iterfind('./devices/channel'):
        target = channel.find('target')
        if target is not None and target.get('name') == AGENT_CHANNEL:
            return target.get('state') == 'connected'
    return False


def run_quiesced(dom, quiesce, agent, begin, sleep=time.sleep, clock=time.monotonic):
    """Run begin() with the guest frozen when agent is true and quiesce is not 'off'.

    With quiesce='required' an agent that does not answer, or a freeze it refuses or does not finish within
    AGENT_TIMEOUT_SECONDS, raises before begin() runs. With 'auto' the failure is kept in the result and
    the point is crash-consistent. Returns {'quiesced', 'frozen_filesystems', 'frozen_seconds', 'quiesce_error',
    'begin_seconds'}; frozen_seconds is measured from the freeze request to the thaw's answer, so it bounds
    the guest's own frozen time from above."""
    if not agent or quiesce == 'off':
        return _unfrozen(begin, clock, None)
    try:
        return _frozen_begin(dom, quiesce, begin, sleep, clock)
    finally:
        _set_agent_timeout(dom, libvirt.VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT)


def _frozen_begin(dom, quiesce, begin, sleep, clock):
    frozen_at = thawed_at = None
    frozen_count = None
    quiesce_error = _unanswered(dom)
    if quiesce_error:
        if quiesce == 'required':
            raise BackendError('quiesce=required, but the guest agent of %s does not answer (%s); no freeze was sent '
                               'and the backup job was not started.' % (dom.name(), quiesce_error))
        return _unfrozen(begin, clock, 'the guest agent does not answer (%s); no freeze was sent' % quiesce_error)
    _set_agent_timeout(dom, AGENT_TIMEOUT_SECONDS)
    frozen_at = clock()
    try:
        frozen_count = dom.fsFreeze(None, 0)
    except libvirt.libvirtError as error:
        frozen_at = None
        quiesce_error = error.get_error_message()
        if not _thaw_after_failed_freeze(dom):
            quiesce_error += ('; the agent did not answer a thaw either, so if it freezes when it wakes up, '
                              'thaw it with: virsh domfsthaw %s' % dom.name())
        if quiesce == 'required':
            raise BackendError('quiesce=required, but the guest agent of %s did not freeze its filesystems: '
                               '%s. The backup job was not started.' % (dom.name(), quiesce_error))
    started = clock()
    try:
        begin()
    finally:
        begun = clock()
        if frozen_at is not None:
            _thaw(dom, sleep)
            thawed_at = clock()
    return {'quiesced': frozen_at is not None, 'frozen_filesystems': frozen_count,
            'frozen_seconds': round(thawed_at - frozen_at, 6) if frozen_at is not None else None,
            'quiesce_error': quiesce_error, 'begin_seconds': round(begun - started, 6)}


def _unfrozen(begin, clock, quiesce_error):
    started = clock()
    begin()
    return {'quiesced': False, 'frozen_filesystems': None, 'frozen_seconds': None, 'quiesce_error': quiesce_error,
            'begin_seconds': round(clock() - started, 6)}


def _unanswered(dom):
    """None when the agent answers a harmless command in time, else libvirt's error."""
    _set_agent_timeout(dom, PING_TIMEOUT_SECONDS)
    try:
        dom.getTime(0)
    except libvirt.libvirtError as error:
        return error.get_error_message()
    return None


def _set_agent_timeout(dom, seconds):
    try:
        dom.agentSetResponseTimeout(seconds, 0)
    except (AttributeError, libvirt.libvirtError):
        pass    # libvirt before 5.10: its default (wait) applies


def _thaw_after_failed_freeze(dom):
    _set_agent_timeout(dom, AFTER_FAILED_FREEZE_THAW_SECONDS)
    try:
        dom.fsThaw(None, 0)
    except libvirt.libvirtError:
        return False
    return True


def _thaw(dom, sleep):
    last = None
    for attempt in range(THAW_ATTEMPTS):
        if attempt:
            sleep(THAW_RETRY_SECONDS)
        try:
            dom.fsThaw(None, 0)
            return
        except libvirt.libvirtError as error:
            last = error.get_error_message()
    raise BackendError('The guest agent of %s did not thaw its filesystems after %d attempts (%s): the guest may '
                       'still be frozen. Thaw it with: virsh domfsthaw %s' % (dom.name(), THAW_ATTEMPTS, last, dom.name()),
                       guest_may_be_frozen=True)
