# -*- coding: utf-8 -*-
"""The engine (plan, check mode, execute, wait, fallback) against an in-memory fake backend."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Backend, Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.engine import (
    REBOOTED, StateRequest, ensure_state)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InstanceFailed, InstanceLocked, InstanceNotFound, InvalidRequest, UnreachableState, WaitTimeout)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import MODEL
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import MODEL as OPENSTACK_MODEL
from ansible_collections.vmops.lifecycle.tests.unit.fakes import FakeClock


class FakeBackend(Backend):
    """Follows the libvirt model; `lag` reads pass before a verb shows; `ignore` verbs never take effect."""
    model = MODEL

    def __init__(self, state, lag=0, ignore=(), error_on=None):
        self.state = state
        self.pending = None
        self.lag = lag
        self.ignore = set(ignore)
        self.error_on = error_on
        self.performed = []
        self.reboots = 0

    def location(self):
        return 'fake:///'

    def find(self, identifier):
        return None if self.state == states.ABSENT else identifier

    def observe(self, ref):
        if self.pending:
            countdown, target = self.pending
            if countdown <= 0:
                self.state, self.pending = target, None
            else:
                self.pending = (countdown - 1, target)
        fault = 'disk on fire' if self.state == states.ERROR else None
        return Observation(ref, 'uuid-1', self.state, None, fault, {'reboots': self.reboots})

    def perform(self, ref, verb, options=None):
        self.performed.append(verb)
        if verb in self.ignore:
            return None
        if verb == self.error_on:
            self.pending = (self.lag, states.ERROR)
            return None
        if verb.startswith('reboot'):
            self.reboots += 1
            return None
        edge = [e for e in MODEL.transitions if e.verb == verb and e.source == self.state][0]
        self.pending = (self.lag, edge.target)
        return None


def request(wanted, **overrides):
    fields = dict(identifier='vm1', wanted=wanted, hard=False, reboot_type=None, shutdown_timeout=None,
                  force_fallback=False, wait=True, timeout=60)
    fields.update(overrides)
    return StateRequest(**fields)


def converge(backend, wanted, check_mode=False, **overrides):
    clock = FakeClock()
    return ensure_state(backend, request(wanted, **overrides), check_mode=check_mode,
                        clock=clock, sleep=clock.sleep)


def test_already_there_is_unchanged_and_touches_nothing():
    backend = FakeBackend(states.PAUSED)
    result = converge(backend, states.PAUSED)
    assert result['changed'] is False
    assert backend.performed == []
    assert result['diff'] == {'before': {'state': 'paused'}, 'after': {'state': 'paused'}}


def test_check_mode_reports_the_plan_and_performs_nothing():
    backend = FakeBackend(states.SUSPENDED)
    result = converge(backend, states.PAUSED, check_mode=True)
    assert result['changed'] is True
    assert result['instance']['plan'] == ['restore', 'pause']
    assert result['instance']['executed'] == []
    assert result['instance']['state'] == 'suspended'
    assert backend.performed == []
    assert result['diff']['after'] == {'state': 'paused'}


def test_apply_runs_the_plan_waiting_on_each_step():
    backend = FakeBackend(states.SUSPENDED, lag=3)
    result = converge(backend, states.PAUSED)
    assert backend.performed == ['restore', 'pause']
    assert [s['verb'] for s in result['instance']['executed']] == ['restore', 'pause']
    assert result['instance']['state_before'] == 'suspended'
    assert result['instance']['state'] == 'paused'


def test_missing_instance_is_fine_for_absent_and_an_error_otherwise():
    assert converge(FakeBackend(states.ABSENT), states.ABSENT)['changed'] is False
    with pytest.raises(InstanceNotFound) as caught:
        converge(FakeBackend(states.ABSENT), states.RUNNING)
    assert "No instance 'vm1' at fake:///" in caught.value.msg


def test_graceful_stop_that_times_out_fails_with_a_hint_and_does_not_cut_power():
    backend = FakeBackend(states.RUNNING, ignore={'shutdown'})
    with pytest.raises(WaitTimeout) as caught:
        converge(backend, states.STOPPED, shutdown_timeout=5)
    assert backend.performed == ['shutdown']
    assert 'force_stop_fallback' in caught.value.msg
    assert caught.value.details['instance']['state'] == 'running'
    assert caught.value.details['instance']['executed'][0]['verb'] == 'shutdown'   # it was sent: changed


def test_graceful_stop_falls_back_to_power_off_when_asked():
    backend = FakeBackend(states.RUNNING, ignore={'shutdown'})
    result = converge(backend, states.STOPPED, shutdown_timeout=5, force_fallback=True)
    assert backend.performed == ['shutdown', 'destroy']
    step = result['instance']['executed'][0]
    assert step['fallback'] == 'destroy'
    assert result['instance']['state'] == 'stopped'


def test_hard_stop_destroys_directly():
    backend = FakeBackend(states.PAUSED)
    converge(backend, states.STOPPED, hard=True)
    assert backend.performed == ['destroy']


def test_error_during_a_step_fails_fast_with_fault_and_partial_progress():
    backend = FakeBackend(states.SUSPENDED, lag=1, error_on='pause')
    with pytest.raises(InstanceFailed) as caught:
        converge(backend, states.PAUSED)
    assert 'disk on fire' in caught.value.msg
    assert [s['verb'] for s in caught.value.details['instance']['executed']] == ['restore', 'pause']


def test_reboot_always_acts_and_a_stopped_instance_just_boots():
    running = FakeBackend(states.RUNNING)
    assert converge(running, REBOOTED)['instance']['plan'] == ['reboot_soft']
    assert converge(running, REBOOTED, reboot_type='hard')['changed'] is True
    assert running.performed == ['reboot_soft', 'reboot_hard']
    stopped = FakeBackend(states.STOPPED)
    assert converge(stopped, REBOOTED)['instance']['plan'] == ['start']
    paused = FakeBackend(states.PAUSED)
    assert converge(paused, REBOOTED)['instance']['plan'] == ['resume', 'reboot_soft']


def test_no_wait_skips_only_the_last_wait():
    backend = FakeBackend(states.SUSPENDED, lag=2)
    result = converge(backend, states.PAUSED, wait=False)
    executed = result['instance']['executed']
    assert 'waited' not in executed[0] and executed[1]['waited'] is False


@pytest.mark.parametrize('overrides,message', [
    (dict(wanted='shelved'), "cannot reach state 'shelved'"),
    (dict(wanted='running', reboot_type='hard'), "reboot_type only applies to state 'rebooted'"),
    (dict(wanted='stopped', hard=True, force_fallback=True), 'stop_method is already hard'),
    (dict(wanted='stopped', hard=True, shutdown_timeout=10), 'shutdown_timeout only applies'),
    (dict(wanted='stopped', force_fallback=True, wait=False), 'force_stop_fallback needs wait=true'),
    (dict(wanted='stopped', shutdown_timeout=500), 'longer than timeout'),
    (dict(wanted='stopped', timeout=0), 'timeout must be a positive'),
])
def test_bad_input_is_refused_before_anything_is_touched(overrides, message):
    backend = FakeBackend(states.RUNNING)
    wanted = overrides.pop('wanted')
    with pytest.raises(InvalidRequest) as caught:
        converge(backend, wanted, **overrides)
    assert message in caught.value.msg
    assert backend.performed == []


class FakeNova(FakeBackend):
    """The OpenStack model with a lock flag."""
    model = OPENSTACK_MODEL

    def __init__(self, state, locked=False, reason=None):
        super(FakeNova, self).__init__(state)
        self.locked, self.reason = locked, reason

    def observe(self, ref):
        observation = super(FakeNova, self).observe(ref)
        observation.details.update(locked=self.locked, locked_reason=self.reason)
        return observation

    def perform(self, ref, verb, options=None):
        if verb in ('lock', 'unlock'):
            self.performed.append(verb)
            self.locked = verb == 'lock'
            self.reason = (options or {}).get('lock_reason') if self.locked else None
            return None
        self.performed.append(verb)
        edge = [e for e in OPENSTACK_MODEL.transitions if e.verb == verb and e.source == self.state][0]
        self.pending = (0, edge.target)
        return None


def test_a_locked_server_is_not_touched_unless_unlocking_was_asked():
    nova = FakeNova(states.RUNNING, locked=True, reason='disk replacement')
    with pytest.raises(InstanceLocked) as caught:
        converge(nova, states.STOPPED)
    assert 'locked (reason: disk replacement)' in caught.value.msg and 'locked=false' in caught.value.msg
    assert nova.performed == []
    result = converge(nova, states.STOPPED, locked=False)
    assert nova.performed == ['unlock', 'stop']
    assert result['diff'] == {'before': {'state': 'running', 'locked': True},
                              'after': {'state': 'stopped', 'locked': False}}


def test_lock_comes_last_with_its_reason_and_is_idempotent():
    nova = FakeNova(states.RUNNING)
    result = converge(nova, states.PAUSED, locked=True, lock_reason='maintenance')
    assert result['instance']['plan'] == ['pause', 'lock']
    assert (nova.locked, nova.reason) == (True, 'maintenance')
    assert converge(nova, states.PAUSED, locked=True, lock_reason='maintenance')['changed'] is False
    assert converge(nova, states.PAUSED, locked=True, lock_reason='new reason')['instance']['plan'] == \
        ['unlock', 'lock']


def test_shelved_offloaded_already_is_shelved():
    nova = FakeNova(states.SHELVED_OFFLOADED)
    assert converge(nova, states.SHELVED)['changed'] is False


def test_libvirt_has_no_lock():
    with pytest.raises(InvalidRequest) as caught:
        converge(FakeBackend(states.RUNNING), states.RUNNING, locked=True)
    assert 'libvirt backend has no lock' in caught.value.msg


def test_resize_pending_says_what_to_do():
    with pytest.raises(UnreachableState) as caught:
        converge(FakeNova('resize_pending'), states.RUNNING)
    assert 'instance_resize' in caught.value.msg


def test_rebooted_from_a_state_left_by_booting_adds_no_second_reboot():
    for state in (states.SHELVED_OFFLOADED, states.RESCUED):
        assert converge(FakeNova(state), REBOOTED)['instance']['plan'] == \
            [e.verb for e in OPENSTACK_MODEL.transitions if e.source == state and e.target == states.RUNNING]
    assert converge(FakeNova(states.PAUSED), REBOOTED)['instance']['plan'] == ['unpause', 'reboot_soft']
