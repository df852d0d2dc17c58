# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r'''
options:
  wait:
    description:
      - Wait until the instance has reached the wanted state before returning.
      - When V(false), intermediate steps of a plan are still waited on (a guest cannot be paused
        before it has started); only the last step is not.
    type: bool
    default: true
  timeout:
    description:
      - Seconds the whole run may take, all steps and waits included.
      - On timeout the module fails with the last state it saw and the time it waited.
      - An instance that enters an error state while waited on fails the run at once, with its
        fault message.
    type: int
    default: 180
  retry_budget:
    description:
      - Seconds one API request (OpenStack) or one libvirt call keeps being retried when it meets a
        transient failure, within O(timeout).
      - "Transient: connection errors and resets, a restarted libvirtd, HTTP 502, 503, 504 and 429
        (its Retry-After is honoured). Retries back off exponentially with jitter, from 0.5 s up to 8 s."
      - Reads are always retried. An action is sent again only when it provably did not reach the
        service, or when a fresh read shows it did not take effect; it is never applied twice.
      - For M(vmops.lifecycle.host_evacuate), also how long the shared progress read may keep failing
        before the run ends; it then reports every instance (moved, failed, still in flight, not started).
      - V(0) turns retries off.
    type: int
    default: 60
'''
