# -*- coding: utf-8 -*-
"""Freezing a guest around the start of a libvirt backup job: when the agent is asked, what a refused
freeze does under each quiesce setting, and that a thaw is retried and a guest left frozen is reported."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import quiesce
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt

CHANNEL = "<domain><devices><channel type='unix'><target type='virtio' name='%s' state='%s'/></channel></devices></domain>"

if libvirt is None:
    pytest.skip('libvirt-python is not installed', allow_module_level=True)


def _error(text):
    error = libvirt.libvirtError(text)
    error.get_error_message = lambda: text
    return error


class Guest(object):
    """A domain whose agent freezes (or refuses), recording the order of calls."""

    def __init__(self, freeze_error=None, thaw_failures=0, ping_error=None):
        self.calls = []
        self.ping_error = ping_error
        self.freeze_error = freeze_error
        self.thaw_failures = thaw_failures

    def name(self):
        return 'web1'

    def fsFreeze(self, mountpoints, flags):
        self.calls.append('freeze')
        if self.freeze_error:
            raise _error(self.freeze_error)
        return 2

    def getTime(self, flags):
        self.calls.append('ping')
        if self.ping_error:
            raise _error(self.ping_error)
        return {'seconds': 1, 'nseconds': 0}

    def agentSetResponseTimeout(self, seconds, flags):
        self.calls.append('timeout %d' % seconds)

    def fsThaw(self, mountpoints, flags):
        self.calls.append('thaw')
        if self.thaw_failures:
            self.thaw_failures -= 1
            raise _error('agent busy')
        return 2


class Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        self.now += 0.25
        return self.now


def test_agent_detection_reads_the_channel_state():
    assert quiesce.agent_connected(ET.fromstring(CHANNEL % (quiesce.AGENT_CHANNEL, 'connected')))
    assert not quiesce.agent_connected(ET.fromstring(CHANNEL % (quiesce.AGENT_CHANNEL, 'disconnected')))
    assert not quiesce.agent_connected(ET.fromstring(CHANNEL % ('org.other.0', 'connected')))
    assert not quiesce.agent_connected(ET.fromstring('<domain><devices/></domain>'))


def test_the_job_starts_between_freeze_and_thaw():
    guest = Guest()
    result = quiesce.run_quiesced(guest, 'required', True, lambda: guest.calls.append('begin'), clock=Clock())
    assert guest.calls == ['timeout 5', 'ping', 'timeout 20', 'freeze', 'begin', 'thaw', 'timeout -1']
    assert result['quiesced'] is True and result['frozen_filesystems'] == 2
    assert result['frozen_seconds'] == pytest.approx(0.75) and result['quiesce_error'] is None


@pytest.mark.parametrize('quiesce_mode, agent', [('off', True), ('auto', False), ('required', False)])
def test_no_freeze_without_agent_or_when_off(quiesce_mode, agent):
    guest = Guest()
    result = quiesce.run_quiesced(guest, quiesce_mode, agent, lambda: guest.calls.append('begin'))
    assert guest.calls == ['begin']
    assert result['quiesced'] is False and result['frozen_seconds'] is None


def test_required_and_a_refused_freeze_start_nothing():
    guest = Guest(freeze_error='Guest agent is not responding')
    with pytest.raises(BackendError) as raised:
        quiesce.run_quiesced(guest, 'required', True, lambda: guest.calls.append('begin'))
    # libvirt's wait is bounded, one short thaw follows (the agent may freeze late), the default comes back
    assert guest.calls == ['timeout 5', 'ping', 'timeout 20', 'freeze', 'timeout 5', 'thaw', 'timeout -1']
    assert 'did not freeze' in str(raised.value) and 'not started' in str(raised.value)


def test_auto_and_a_refused_freeze_give_a_crash_consistent_job_that_says_why():
    guest = Guest(freeze_error='Guest agent is not responding')
    result = quiesce.run_quiesced(guest, 'auto', True, lambda: guest.calls.append('begin'))
    assert guest.calls == ['timeout 5', 'ping', 'timeout 20', 'freeze', 'timeout 5', 'thaw', 'begin', 'timeout -1']
    assert result['quiesced'] is False and result['quiesce_error'] == 'Guest agent is not responding'


def test_a_failed_thaw_is_tried_again():
    guest = Guest(thaw_failures=2)
    sleeps = []
    result = quiesce.run_quiesced(guest, 'auto', True, lambda: None, sleep=sleeps.append)
    assert [c for c in guest.calls if not c.startswith('timeout')] == ['ping', 'freeze', 'thaw', 'thaw', 'thaw']
    assert len(sleeps) == 2
    assert result['quiesced'] is True


def test_a_guest_left_frozen_is_an_error_that_says_how_to_thaw_it():
    guest = Guest(thaw_failures=5)
    with pytest.raises(BackendError) as raised:
        quiesce.run_quiesced(guest, 'auto', True, lambda: None, sleep=lambda _s: None)
    assert guest.calls.count('thaw') == quiesce.THAW_ATTEMPTS
    assert 'virsh domfsthaw web1' in str(raised.value) and raised.value.details['guest_may_be_frozen']
    assert guest.calls[-1] == 'timeout -1'


def test_the_guest_is_thawed_when_the_job_is_refused():
    guest = Guest()

    def refused():
        raise BackendError('libvirt refused the backup')

    with pytest.raises(BackendError):
        quiesce.run_quiesced(guest, 'required', True, refused)
    assert guest.calls == ['timeout 5', 'ping', 'timeout 20', 'freeze', 'thaw', 'timeout -1']


@pytest.mark.parametrize('quiesce_mode', ['required', 'auto'])
def test_an_agent_that_does_not_answer_is_sent_no_freeze(quiesce_mode):
    """A freeze libvirt gives up on still reaches a stalled agent when it wakes: so none is sent to it."""
    guest = Guest(ping_error='Guest agent is not responding')

    def run():
        return quiesce.run_quiesced(guest, quiesce_mode, True, lambda: guest.calls.append('begin'))

    if quiesce_mode == 'required':
        with pytest.raises(BackendError) as raised:
            run()
        assert 'does not answer' in str(raised.value) and 'no freeze was sent' in str(raised.value)
        assert guest.calls == ['timeout 5', 'ping', 'timeout -1']
    else:
        result = run()
        assert guest.calls == ['timeout 5', 'ping', 'begin', 'timeout -1']
        assert result['quiesced'] is False and 'no freeze was sent' in result['quiesce_error']


def test_a_freeze_and_a_thaw_both_unanswered_say_how_to_thaw():
    guest = Guest(freeze_error='timed out', thaw_failures=1)
    result = quiesce.run_quiesced(guest, 'auto', True, lambda: None)
    assert 'virsh domfsthaw web1' in result['quiesce_error']
