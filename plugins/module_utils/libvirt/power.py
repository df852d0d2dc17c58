# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Power-off on libvirt, once for every libvirt file.

start() starts a domain; shutdown() asks the guest (libvirt picks the guest agent if the domain has one, else the ACPI power
button); destroy() cuts the power.  Both are sent through the connection keeper with a re-read that
says whether they took effect, so a connection that drops while one is sent neither loses it nor
sends it twice when it did take effect.  (A shutdown request whose answer was lost is sent again
while the guest still runs: a second press of the power button is harmless.)

power_off() is the graceful-then-forced sequence the families share: shutdown, wait until the
domain is shut off, and cut the power when it does not go down in time only when the caller opts in
(`force`): rescue and restore do, as Nova does (a guest in need of rescue may not shut down); a cold
move never does.  The waiting is the core's wait_until on libvirt's own state code.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import BackendError, WaitTimeout
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import wait_until
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import act, libvirt

SHUTDOWN, DESTROY, SHUTDOWN_THEN_DESTROY = 'shutdown', 'destroy', 'shutdown_then_destroy'


def start(dom):
    """Start a domain (a managed save image is restored)."""
    act(dom, 'create', verify=dom.isActive)


def shutdown(dom):
    """Ask the guest to power off (does not wait)."""
    act(dom, 'shutdown', verify=lambda: dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING)


def destroy(dom):
    """Cut the power (does not wait for anything: libvirt returns once QEMU is gone)."""
    act(dom, 'destroy', verify=lambda: not dom.isActive())


def wait_off(dom, timeout, check=None, clock=time.monotonic, sleep=time.sleep):
    """Wait until the domain is shut off; True if it is, False when `timeout` (seconds or a Deadline)
    passed first.  `check()` runs on every poll and may raise to stop waiting (a cancelled move)."""
    def observe():
        if check is not None:
            check()
        return dom.state()[0]
    try:
        wait_until(observe, lambda code: code == libvirt.VIR_DOMAIN_SHUTOFF, _state_name,
                   'domain %s to shut off' % dom.name(), timeout, clock=clock, sleep=sleep)
    except WaitTimeout:
        return False
    return True


def power_off(dom, timeout, force, purpose, destroy_at_once=False, check=None, on_sent=None,
              clock=time.monotonic, sleep=time.sleep):
    """Power a running domain off for `purpose` (a rescue, a restore, a cold move).

    destroy_at_once: cut the power without asking (a crashed guest, or one whose memory is about to be
    thrown away).  Otherwise shutdown and wait up to `timeout`; then destroy when `force`, else raise
    BackendError (the guest keeps running, the request stays pending).  on_sent() runs once the
    shutdown request is sent.  Returns the step taken: None (already off), 'destroy', 'shutdown',
    'shutdown_then_destroy'."""
    if not dom.isActive():
        return None
    if destroy_at_once:
        destroy(dom)
        return DESTROY
    shutdown(dom)
    if on_sent is not None:
        on_sent()
    if wait_off(dom, timeout, check, clock=clock, sleep=sleep):
        return SHUTDOWN
    if not force:
        seconds = round(timeout.expires - timeout.started, 1) if hasattr(timeout, 'expires') else timeout
        raise BackendError('the guest did not shut down within %s s for %s (does it ignore ACPI?); it was not '
                           'forced off' % (seconds, purpose))
    if dom.isActive():
        destroy(dom)
    return SHUTDOWN_THEN_DESTROY


def _state_name(code):
    names = {libvirt.VIR_DOMAIN_RUNNING: 'running', libvirt.VIR_DOMAIN_PAUSED: 'paused',
             libvirt.VIR_DOMAIN_SHUTDOWN: 'shutting down', libvirt.VIR_DOMAIN_SHUTOFF: 'shut off',
             libvirt.VIR_DOMAIN_CRASHED: 'crashed'}
    return names.get(code, 'state %s' % code)
