# -*- coding: utf-8 -*-
"""The waiter, on a fake clock: no real sleeping, exact times."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InstanceFailed, WaitTimeout
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until
from ansible_collections.vmops.lifecycle.tests.unit.fakes import FakeClock


def run(sequence, clock, timeout=10, failure=None):
    readings = iter(sequence)
    last = {}

    def observe():
        last['value'] = next(readings, last.get('value'))
        return last['value']

    return wait_until(observe, lambda v: v == 'ready', str, 'thing to be ready', timeout,
                      failure=failure, clock=clock, sleep=clock.sleep)


def test_returns_the_ready_observation_without_sleeping_if_already_ready():
    clock = FakeClock()
    assert run(['ready'], clock) == 'ready'
    assert clock.sleeps == []


def test_polls_with_growing_interval_until_ready():
    clock = FakeClock()
    assert run(['busy', 'busy', 'busy', 'ready'], clock) == 'ready'
    assert clock.sleeps == pytest.approx([0.1, 0.15, 0.225])


def test_interval_is_capped():
    clock = FakeClock()
    run(['busy'] * 30 + ['ready'], clock, timeout=1000)
    assert max(clock.sleeps) == 2.0


def test_timeout_reports_last_state_and_time_waited():
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as caught:
        run(['booting', 'still booting'], clock, timeout=5)
    assert caught.value.details['last_state'] == 'still booting'
    assert caught.value.details['waited'] == pytest.approx(5.0)
    assert 'last state seen: still booting' in caught.value.msg
    assert 'thing to be ready' in caught.value.msg


def test_never_sleeps_past_the_deadline():
    clock = FakeClock()
    with pytest.raises(WaitTimeout):
        run(['busy'], clock, timeout=3)
    assert clock.now == pytest.approx(1003.0)


def test_fails_fast_on_error_state():
    clock = FakeClock()
    with pytest.raises(InstanceFailed) as caught:
        run(['busy', 'ERROR'], clock, failure=lambda v: 'broken: %s' % v if v == 'ERROR' else None)
    assert 'broken: ERROR' in caught.value.msg
    assert clock.sleeps == [0.1]     # one poll interval, not the whole timeout


def test_shared_deadline_spans_several_waits():
    clock = FakeClock()
    deadline = Deadline(4, clock=clock)
    run(['busy'] * 5 + ['ready'], clock, timeout=deadline)
    spent = clock.now - 1000.0
    with pytest.raises(WaitTimeout) as caught:
        run(['busy'], clock, timeout=deadline)
    assert caught.value.details['waited'] == pytest.approx(4 - spent, abs=0.001)
