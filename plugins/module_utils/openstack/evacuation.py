# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How each server of a dead host is evacuated, whatever its state, and what happens to its disk.

Nova evacuates only ACTIVE, STOPPED and ERROR servers with no task in progress (compute API
`evacuate`: vm_state in [active, stopped, error], task_state None; anything else gets HTTP 409).
Every other server is first reset to ERROR (os-resetState, admin), which clears a stuck task too;
an evacuated server that was in ERROR comes up ACTIVE on its new host (Nova rebuilds it and, since
it was not STOPPED, leaves it running).  The state it had is then set again where the hypervisor
allows it:

  ==================  ===========================================  ====================================
  state on the host    steps                                       state after
  ==================  ===========================================  ====================================
  running, stopped     evacuate                                    the same (Nova keeps it, 2.68..2.93)
  error                evacuate (error_policy=move)                running
  paused               reset, evacuate, pause                      paused
  suspended            reset, evacuate, suspend                    suspended (a fresh guest: RAM lost)
  rescued              reset, evacuate                             running: the rescue session is lost
  a stuck task         reset, evacuate, (stop / pause / suspend)   its vm_state before the task
  resize pending       confirm, evacuate                           confirmed (the new flavor), kept
  ==================  ===========================================  ====================================

A pending resize is confirmed, not reverted: Nova confirms on the resize's *source* compute (alive:
the dead host is the server's current, destination host), which frees the old allocation; a revert
would need the dead host.  The confirmed server is ACTIVE or STOPPED, which Nova evacuates as it is.

Whenever a step after a reset fails with the server still in ERROR, the server is reset to ACTIVE
again (never left in ERROR by this collection) and the message says where it is and what to do.

The disk: a server booted from a volume (its `image` is empty) keeps its root disk (a Cinder volume),
as do all attached volumes (`os-extended-volumes:volumes_attached`).  An image-backed server's root
disk lives in the compute's instance storage: it survives only when that storage is shared between
the computes (Ceph RBD `images_type=rbd`, NFS-mounted instances_path), which the Nova API does not
show, so the caller says it (`shared_storage`); otherwise Nova recreates the disk from the server's
image and the data written since is lost.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states

# What Nova evacuates as it is (with task_state None).
EVACUABLE = (states.RUNNING, states.STOPPED, states.ERROR)
# The step that sets a state again on the new host, after an evacuation that left the server running.
RESTORE_STEP = {states.PAUSED: 'pause', states.SUSPENDED: 'suspend', states.STOPPED: 'stop'}
RESET, RESET_BACK = 'reset_state', 'reset_active'


def needs_reset(subject):
    """A server Nova would refuse to evacuate as it is (a pending resize is confirmed instead)."""
    if subject.state == states.RESIZE_PENDING:
        return False
    return subject.state not in EVACUABLE or bool(subject.task)


def evacuation_steps(subject, power_state='keep'):
    """(steps, note): the verbs of one server's evacuation in order ('move' is the evacuation itself),
    and what the plan and the report say of the state it ends in.  power_state: keep, running, stopped."""
    state = subject.state
    reset = needs_reset(subject)
    steps = [RESET] if reset else []
    if state == states.RESIZE_PENDING:
        steps.append('confirm')
    steps.append('move')
    notes = []
    if reset:
        notes.append('reset to error%s first (Nova evacuates only active, stopped and error servers with no task)'
                     % (' (task %s)' % subject.task if subject.task else ''))
    if state == states.RESIZE_PENDING:
        notes.append('the pending resize is confirmed first (on its source compute)')
    # Where the evacuation leaves it: a reset server comes up running; otherwise Nova keeps running/stopped.
    after = states.RUNNING if reset or state != states.STOPPED else states.STOPPED
    if power_state == 'keep':
        wanted = state
    else:
        wanted = {'running': states.RUNNING, 'stopped': states.STOPPED}[power_state]
    if state == states.RESIZE_PENDING:
        return steps, '; '.join(notes + ['ends running or stopped as the confirm leaves it (power_state does '
                                         'not apply)'])
    if wanted == states.RESCUED:
        notes.append('ends running: the rescue session is lost (rescue it again if needed)')
    elif wanted == states.ERROR:
        notes.append('ends running (Nova rebuilds a server in error as active)')
    elif wanted != after:
        if wanted == states.RUNNING:
            steps.append('start')
        else:
            steps.append(RESTORE_STEP[wanted])
        if wanted in (states.PAUSED, states.SUSPENDED):
            notes.append('%s again on the new host (a fresh guest: its memory is not kept)' % wanted)
    return steps, '; '.join(notes) or None


def disk_fate(body, shared_storage=False):
    """{root, survives, volumes}: what happens to a server's disks when it is evacuated (see the module doc)."""
    volumes = [v.get('id') for v in body.get('os-extended-volumes:volumes_attached') or []]
    if not body.get('image'):
        return {'root': 'volume', 'survives': True, 'volumes': volumes}
    if shared_storage:
        return {'root': 'shared', 'survives': True, 'volumes': volumes}
    return {'root': 'local', 'survives': False, 'volumes': volumes}


def disk_note(fate):
    if fate is None:
        return None
    if fate['root'] == 'volume':
        return 'root disk on a volume: kept'
    if fate['root'] == 'shared':
        return 'root disk on shared storage: kept'
    return 'local root disk: recreated from its image (data since then lost)%s' % (
        '; its %d volume(s) are kept' % len(fate['volumes']) if fate['volumes'] else '')
