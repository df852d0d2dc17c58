# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retry arithmetic both request layers share (openstack/request.py, libvirt/connection.py):
how long one call may keep retrying, and how long to pause between tries.  No I/O."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DEFAULT_RETRY_BUDGET = 60
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0


def budget_seconds(retry_budget):
    """The `retry_budget` option as seconds: the default when unset, never negative."""
    return DEFAULT_RETRY_BUDGET if retry_budget is None else max(0, retry_budget)


def backoff(attempt, jitter, retry_after=None):
    """Full-jitter exponential backoff after the `attempt`-th try (0.5 s doubling, at most 8 s);
    `jitter()` gives a number in [0, 1); a server's Retry-After is a floor."""
    pause = jitter() * min(BACKOFF_MAX, BACKOFF_FIRST * (2 ** (attempt - 1)))
    return pause if retry_after is None else max(pause, retry_after)


class RetryWindow(object):
    """The time one call may spend retrying: `retry_budget` seconds from its first try, and never
    past the run's deadline (a waiter Deadline, or None)."""

    def __init__(self, retry_budget, deadline, clock):
        self.clock = clock
        self.started = clock()
        self.give_up_at = self.started + retry_budget
        if deadline is not None:
            self.give_up_at = min(self.give_up_at, self.started + max(0.0, deadline.remaining()))

    def allows(self, pause):
        """Whether a pause of that length still leaves room for another try."""
        return self.clock() + pause <= self.give_up_at

    def elapsed(self):
        return self.clock() - self.started
