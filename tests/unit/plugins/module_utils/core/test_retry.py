# -*- coding: utf-8 -*-
"""The retry arithmetic both request layers share."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.retry import (
    RetryWindow, backoff, budget_seconds)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline


def test_backoff_doubles_to_a_cap_with_jitter_and_honours_retry_after():
    assert [backoff(n, lambda: 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff(3, lambda: 0.25) == 0.5
    assert backoff(1, lambda: 1.0, retry_after=5) == 5


def test_the_window_ends_at_the_budget_or_the_runs_deadline(clock):
    assert budget_seconds(None) == 60 and budget_seconds(-3) == 0
    window = RetryWindow(30, None, clock)
    assert window.allows(30) and not window.allows(30.1)
    clock.sleep(10)
    assert window.elapsed() == 10 and not window.allows(21)
    bounded = RetryWindow(30, Deadline(5, clock=clock), clock)
    assert bounded.allows(5) and not bounded.allows(6)
