# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting: a readiness predicate polled against a monotonic clock.

The waiter never sleeps past its deadline, fails at once when the observed
thing reports an error, and on timeout says what it saw last and for how long
it waited, so an operator can tell "slow" from "stuck".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InstanceFailed, WaitTimeout


class Deadline(object):
    """A point in time on the monotonic clock, shared by the steps of one run."""

    def __init__(self, seconds, clock=time.monotonic):
        self._clock = clock
        self.started = clock()
        self.expires = self.started + seconds

    def remaining(self):
        return max(0.0, self.expires - self._clock())

    def elapsed(self):
        return self._clock() - self.started

    def expired(self):
        return self._clock() >= self.expires


def wait_until(observe, is_ready, describe, what, timeout, failure=None,
               first_interval=0.1, max_interval=2.0, clock=time.monotonic, sleep=time.sleep):
    """Poll `observe()` until `is_ready(observation)` is true; return the last observation.

    observe:   reads the current observation (read-only, cheap)
    is_ready:  predicate on an observation
    describe:  turns an observation into a short text for messages ("running", "stopped (task: ...)")
    what:      what we wait for, for messages ("domain web1 to be stopped")
    timeout:   seconds, or a Deadline shared with other waits
    failure:   returns an error message if the observation is a failure (fail fast), else None

    The poll interval starts small (local hypervisors answer in milliseconds) and
    grows to `max_interval`, so long waits do not hammer an API.
    """
    deadline = timeout if isinstance(timeout, Deadline) else Deadline(timeout, clock=clock)
    started = clock()
    interval = first_interval
    while True:
        observation = observe()
        if is_ready(observation):
            return observation
        problem = failure(observation) if failure else None
        if problem:
            raise InstanceFailed(
                'While waiting for %s: %s' % (what, problem),
                last_state=describe(observation), waited=round(clock() - started, 3))
        remaining = deadline.remaining()
        if remaining <= 0:
            waited = round(clock() - started, 3)
            raise WaitTimeout(
                'Timed out after %.1f s waiting for %s; last state seen: %s.'
                % (waited, what, describe(observation)),
                last_state=describe(observation), waited=waited)
        sleep(min(interval, remaining))
        interval = min(interval * 1.5, max_interval)
