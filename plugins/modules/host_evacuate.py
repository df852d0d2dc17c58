#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: host_evacuate
short_description: Move every instance off a host (planned drain, or evacuation of a dead host)
version_added: 0.1.0
description:
  - V(drain) (planned maintenance) empties a live host. Running and paused instances move live, and
    stopped ones move cold (on OpenStack, the cold migration is confirmed). Suspended, shelved and
    rescued instances follow O(suspended_policy), O(shelved_policy) and O(rescued_policy). Instances in
    error are reported and left alone unless O(error_policy) says otherwise. Each instance ends in the
    power state it started in.
  - V(evacuate) on OpenStack rebuilds the instances of a dead host on other hosts, whatever their state,
    keeping each one's ID, ports and volumes. A server Nova will not evacuate as it is (paused, suspended,
    rescued, or stuck with a task) is reset to error first; a pending resize is confirmed first. Each then
    gets its earlier state back where the hypervisor allows it (see the notes). It is refused unless the
    host's compute service reports down, or the caller states the host is fenced and asks to force it down.
  - V(evacuate) on libvirt brings the domains of a dead hypervisor up on O(target_host), from the backups
    M(vmops.lifecycle.instance_snapshot) kept in a store that outlives the host (O(backup_uri)), or as they are
    with O(shared_storage). It needs O(fenced=true), and a host that still answers is refused. See the notes.
  - At most O(window) moves are in flight at any time; the window is refilled as each move ends. The
    module finds ended moves with one shared read per cycle for all instances, never one read per instance.
  - A live move still running after O(deadline) seconds is aborted (or force-completed, see
    O(deadline_action)). An aborted one then moves cold if O(cold_fallback) allows it.
  - Resumable. The module derives its progress from the cloud or hypervisor, never from a local file.
    A rerun after an interrupted run follows the moves still in flight, confirms cold migrations left
    waiting, and moves the rest. An instance already moved is no longer on the host and is not touched
    again. A rerun on an empty, disabled host reports no change.
  - The host's compute service is disabled first (O(disable)). If the run fails, the service is
    enabled again unless O(restore_service_on_failure=false). A forced-down mark is never undone.
  - Check mode returns the plan (which instance, which move, in which order) and the room the other
    hosts have (Placement inventories and usages on OpenStack), and touches nothing.
author:
  - vmops.lifecycle contributors (@vmops-lifecycle)
options:
  host:
    description:
      - The host to empty. On OpenStack, a compute host name as Nova's services list shows it.
      - On libvirt, the host name the source hypervisor reports (its URI is O(libvirt_uri)); any other name is
        refused before anything moves. Or the source URI itself (then O(libvirt_uri) may be left out).
    type: str
    required: true
  mode:
    description:
      - V(drain) moves instances off a live host. V(evacuate) brings the instances of a dead host up elsewhere.
    type: str
    choices: [drain, evacuate]
    default: drain
  target_host:
    description:
      - Where to move the instances. On OpenStack, leave it out to let the scheduler choose. A named host is
        still checked by the scheduler (compute microversion 2.68 and later), so a disabled or full
        target is refused. It must be a known compute whose service is enabled and up; any other is refused
        before anything changes.
      - On libvirt, required, the URI of the destination hypervisor.
    type: str
  destinations:
    description:
      - OpenStack, O(mode=drain) only. Where each instance goes, as a dict of instance name or ID to compute host
        name, for example the destinations of a rolling plan (M(vmops.lifecycle.rolling_plan)). Each move
        names its host to Nova, which the scheduler still checks, as with O(target_host).
      - Instances of the host that are not named move as without this option (the scheduler chooses); use
        O(instances) as well to move only the named ones.
      - Every key must be an instance of O(host) and every value a known compute whose service is enabled and
        up; anything else is refused before anything changes. Exclusive with O(target_host).
      - Refused on libvirt, whose drain has one destination URI (O(target_host)).
    type: dict
  instances:
    description:
      - Move only these instances (names or IDs) of the host; the others stay.
      - Every name or ID must be an instance of O(host); any other is refused before anything changes.
    type: list
    elements: str
  reserved_host:
    description:
      - V(evacuate) only. A spare compute host (normally kept disabled) that receives the evacuated instances,
        as Masakari's reserved host. Before the first evacuation its compute service is enabled and it is added
        to every host aggregate the failed host belongs to; the result's C(reserved_host) says what was done.
        It must be a known compute whose service is up. Exclusive with O(target_host).
      - It is left enabled and in those aggregates after the run (it now hosts the instances).
    type: str
  backup_uri:
    description:
      - libvirt, V(evacuate) only. The libvirt URI of the host that keeps the backups (as M(vmops.lifecycle.instance_snapshot)
        took them). Default the O(target_host).
    type: str
  backup_pool:
    description:
      - libvirt, V(evacuate) only. The storage pool of the O(backup_uri) host whose directory is the backup store.
    type: str
  backup_dir:
    description:
      - libvirt, V(evacuate) only. The directory of the backup store on the O(backup_uri) host. Default
        C(/var/lib/libvirt/images/vmops-backups).
    type: str
  shared_storage:
    description:
      - On libvirt, the dead host's disk paths are reachable, unchanged, from O(target_host). A domain whose every
        disk exists there is defined on them as it is, not restored from its backup.
      - V(evacuate) only. The computes keep instance disks on shared storage (Ceph RBD C(images_type=rbd), an
        NFS C(instances_path)), so an image-backed server's root disk survives the evacuation. The Nova API
        does not show this. Without it, the plan and the result say that such a disk is recreated from its
        image. A server booted from a volume always keeps its disks.
    type: bool
    default: false
  window:
    description:
      - Most moves in flight at once. Default 2 on OpenStack and 1 on libvirt.
      - On OpenStack, set it to the source compute's C(max_concurrent_live_migrations) (Nova's default is 1;
        the API does not show it). More than that only queue in the compute. The default 2 keeps one move
        queued behind the running one, so the compute does not idle while the module notices a move has ended.
    type: int
  deadline:
    description:
      - Seconds one instance's move may take before O(deadline_action) acts on a live move. Cold moves and
        evacuations cannot be aborted; one still going after twice the deadline is reported failed.
    type: int
    default: 600
  deadline_action:
    description:
      - V(abort) cancels the live migration (the instance stays on the source, running), then
        O(cold_fallback) applies.
      - V(force_complete) makes it finish (the guest is paused for the last copy).
    type: str
    choices: [abort, force_complete]
    default: abort
  cold_fallback:
    description:
      - After an aborted live move, move the instance cold instead. On OpenStack, only active servers
        can be moved this way.
    type: bool
    default: true
  block_migration:
    description:
      - OpenStack live migration's C(block_migration). V(auto) lets Nova decide from the storage.
      - On libvirt, whether disks are copied (C(VIR_MIGRATE_NON_SHARED_DISK); for cold moves, through the storage
        API). V(auto) copies exactly the disks the destination does not share, proved with a probe file;
        V(true) and V(false) are refused when they would copy a shared disk onto itself or leave one behind.
    type: str
    choices: ['auto', 'true', 'false']
    default: auto
  suspended_policy:
    description:
      - V(move) resumes a suspended instance, moves it live and suspends it again.
      - V(skip) leaves it on the host, reported.
      - V(fail) refuses the whole run before anything is touched.
    type: str
    choices: [move, skip, fail]
    default: move
  shelved_policy:
    description:
      - V(move) offloads a shelved (not offloaded) instance. It then has no host, and an unshelve places it
        anew. Shelved-offloaded instances have no host and are never touched.
      - V(skip) and V(fail) as for O(suspended_policy).
    type: str
    choices: [move, skip, fail]
    default: move
  rescued_policy:
    description:
      - V(move) unrescues the instance, moves it live and rescues it again with Nova's default rescue
        image. The rescue session is lost, and a new admin password is set.
      - V(fail) refuses the run, since someone is repairing that instance. The default for O(mode=drain).
      - V(skip) leaves it on the host, reported.
      - With O(mode=evacuate), V(move) (the default there) evacuates it; it comes back running, the rescue
        session lost (the result says so).
    type: str
    choices: [move, skip, fail]
  error_policy:
    description:
      - V(skip) reports instances in error and leaves them alone.
      - V(move) tries to move them. A drain moves them cold, which Nova usually refuses for an instance in
        error. An evacuation rebuilds them.
      - V(fail) refuses the run.
    type: str
    choices: [skip, fail, move]
    default: skip
  disable:
    description:
      - Disable the host's compute service before moving anything, so that nothing new lands there.
    type: bool
    default: true
  disabled_reason:
    description:
      - The reason recorded with the disable. The default is C(vmops host_evacuate <mode>).
    type: str
  restore_service_on_failure:
    description:
      - When the run fails, enable the service again if this run disabled it.
    type: bool
    default: true
  fenced:
    description:
      - V(evacuate) only. The caller states that the host is fenced (powered off or isolated).
    type: bool
    default: false
  force_down:
    description:
      - V(evacuate) only. Mark the host's compute service forced down first; needs O(fenced=true). Without it,
        an evacuation is refused while the service reports up.
    type: bool
    default: false
  power_state:
    description:
      - V(evacuate) only. The power state each server ends in. V(keep) keeps the one it had (Nova evacuates
        only active, stopped and error servers; a paused one is not evacuated, see the notes).
    type: str
    choices: [keep, running, stopped]
    default: keep
  lock_during_move:
    description:
      - Lock each server while it moves, and unlock it after, so that no one stops, deletes or rebuilds it
        midway. Defaults to V(true) for O(mode=evacuate) and V(false) for O(mode=drain) (a live migration
        already refuses most actions). The lock is also released when Nova refuses the move, when it
        fails, and when the module stops following it (past twice the deadline, or O(timeout)), and the
        server's message then says C(undone, unlock). Servers that were already locked keep their lock.
      - Each lock carries the reason C(vmops.lifecycle:host_evacuate:<host>:<run id>). A later run on the
        same host releases such locks left by a run that died (a killed C(ansible-playbook)), whether the
        server is still on the host or was moved; a lock with any other reason is never touched.
    type: bool
  poll_interval:
    description:
      - Seconds between two shared reads while moves are in flight.
    type: float
    default: 0.4
  progress_file:
    description:
      - Path of a file on the managed node to which one JSON line is appended per instance as it finishes,
        so that a long drain can be followed with C(tail -f).
    type: path
  migration_uri:
    description:
      - libvirt only. The URI the source hypervisor reaches the destination with, when it differs from
        O(target_host).
    type: str
  migration_bandwidth:
    description:
      - libvirt only. Bandwidth limit of each migration, in MiB/s.
    type: int
  wait:
    description:
      - Not used. A drain or evacuation always follows its moves to their end, bounded by O(timeout) and
        O(deadline). Accepted so that C(module_defaults) shared with the other modules apply.
    type: bool
    default: true
  timeout:
    description:
      - Seconds the whole run may take. Moves still in flight then are reported C(in_flight) (with their
        migration id on OpenStack); they go on in the backend, and a rerun adopts them. Moves never sent are
        reported C(not_started).
    type: int
    default: 3600
  retry_budget:
    description:
      - Seconds one API request (OpenStack) or libvirt call keeps being retried on a transient failure
        (connection errors and resets, a restarted libvirtd, HTTP 502, 503, 504, 429), with jittered
        exponential backoff from 0.5 s to 8 s. An action is sent again only when it provably did not
        reach the service, or when a fresh read shows it did not take effect.
      - Also how long the shared progress read may keep failing before the run ends. It then ends with
        every instance's outcome (C(moved), C(failed), C(in_flight), C(not_started), ...). A service this
        run disabled is then enabled again with up to 3 tries over about another O(retry_budget)
        (2 s, then 4 s apart); if that fails too, the result says C(service.still_disabled) and how to
        enable it.
      - V(0) turns retries off.
    type: int
    default: 60
extends_documentation_fragment:
  - vmops.lifecycle.backend
  - vmops.lifecycle.libvirt
  - vmops.lifecycle.openstack
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Returns the plan and the capacity check; touches nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Before and after, the host's compute service and where each instance is (host and state).
      In check mode, the target is the instance's entry in O(destinations), O(target_host), O(reserved_host), or
      the scheduler's choice.
notes:
  - Locked servers are moved (an admin may move them) and reported with C(locked=true).
  - Evacuation uses compute microversion 2.84. Up to Zed's 2.93, an evacuated server keeps its power state.
    Nova evacuates only active, stopped and error servers with no task; any other gets HTTP 409. Such a
    server is reset to error first (C(os-resetState), admin), which clears a stuck task too, then evacuated
    (it comes up running), then set back. Paused is paused again, suspended suspended again (a fresh guest,
    its memory is not kept), a stuck task's server gets its earlier state. A rescued server ends running (the
    rescue session is lost, the result says so). A pending resize (VERIFY_RESIZE) is confirmed first (Nova
    confirms it on the resize's source compute, which is alive; a revert would need the dead host), then
    evacuated as it is. Each step is in the server's C(message) and the plan's C(note).
  - A step after a reset that fails never leaves the server in error; it is reset to active (on the dead
    host a rerun then evacuates it), and its message says where it is, what it was and what to do.
  - The plan and the result say per server whether its root disk survives (in the note). A server
    booted from a volume keeps it; an image-backed one keeps it only with O(shared_storage=true), else Nova
    recreates it from its image. Attached volumes are always kept. A server that evacuation cannot bring
    back is relaunched from its newest snapshot by the C(disaster_recovery) role (a new ID).
    Shelved (not offloaded) servers follow O(shelved_policy) (V(fail) refuses the run, else skipped).
  - On libvirt, V(evacuate) takes every domain of the backup store whose newest complete backup was taken on the dead
    host (named by O(libvirt_uri), or O(host) as a URI, probed for up to 10 s, and again every 5 s during the run; one
    that answers stops it before the next domain), or those of O(instances), and
    brings each up on O(target_host) one at a time. Its disks are written there from that backup through libvirt's
    storage API (so it holds the data as of the backup, C(data_as_of) in the result), and it gets the power state
    recorded with the backup (or O(power_state)); a suspended one comes back stopped. A domain already defined on
    the target is skipped, so a rerun changes nothing. Nothing is deleted from the store.
  - A suspended or rescued server whose move is interrupted between its steps (for example resumed and
    moved, but not yet suspended again) is, on a rerun, no longer on the host. Its original state is
    in the failed run's report, not in the cloud.
'''

EXAMPLES = r'''
- name: Drain compute3 for maintenance, four live migrations at a time
  vmops.lifecycle.host_evacuate:
    cloud: production
    host: compute3
    window: 4
    deadline: 900
    disabled_reason: kernel update CHG-1234
    progress_file: /var/tmp/drain-compute3.jsonl
  register: drain

- name: Drain compute3 to the destinations a rolling plan chose for its instances
  vmops.lifecycle.host_evacuate:
    cloud: production
    host: compute3
    destinations:
      web-1: compute9
      batch-7: compute1
    disabled_reason: kernel update CHG-1234, batch 1

- name: What would a drain do, and is there room
  vmops.lifecycle.host_evacuate:
    cloud: production
    host: compute3
  check_mode: true
  register: drain_plan

- name: Compute5 is dead and fenced, rebuild its servers elsewhere
  vmops.lifecycle.host_evacuate:
    cloud: production
    host: compute5
    mode: evacuate
    fenced: true
    force_down: true

- name: The libvirt host kvm3 is dead and powered off, bring its domains up on kvm4 from their backups kept there
  vmops.lifecycle.host_evacuate:
    libvirt_uri: qemu+ssh://root@kvm3/system
    host: kvm3
    mode: evacuate
    fenced: true
    target_host: qemu+ssh://root@kvm4/system
    backup_uri: qemu+ssh://root@kvm4/system

- name: Compute5 is dead, bring its servers up on the spare compute9 (kept disabled until now)
  vmops.lifecycle.host_evacuate:
    cloud: production
    host: compute5
    mode: evacuate
    reserved_host: compute9
    shared_storage: true
'''

RETURN = r'''
plan:
  description:
    - The ordered plan, one entry per instance found on the host (instance, id, move, from, state, locked, note).
    - For an evacuation on OpenStack, the note names the steps (for example C(reset_state, move, pause)) and what
      happens to the disk, and C(disk) says it as data (root is V(volume), V(shared) or V(local); survives; volumes).
  returned: always
  type: list
  elements: dict
capacity:
  description:
    - Room on the other hosts. On OpenStack, per host the free VCPU, MEMORY_MB and DISK_GB from Placement, whether the
      largest instance fits, and whether the host is usable (enabled and up). Also the total needed and whether it fits.
  returned: always
  type: raw
servers:
  description:
    - Per instance, name, id, from, to, move (live, cold, evacuate, offload, skip, adopt, unmovable), attempts,
      state_before, state_after, locked, started, finished, seconds, outcome (moved, skipped, failed, already_done, planned in
      check mode) and message.
    - An evacuated server's message names the steps taken, and C(disk) is as in RV(plan).
    - On libvirt, C(places) gives the domain's state on each host as read at the end (C(unknown) where a host could
      not be read), so a run cut short by a dead host still says where each domain really is.
    - On libvirt, a moved domain that had checkpoints (the chains of M(vmops.lifecycle.instance_backup)) has
      C(checkpoints) with C(carried) (redefined on the destination, validated against the disk's bitmaps), C(lost)
      and C(why). libvirt moves a checkpoint's bitmaps with the disk but not its definition, so the move reads the
      definitions first and redefines them once the domain runs on the destination; a stopped domain's cannot be
      validated, so they are lost and the next backup point is a full.
  returned: always
  type: list
  elements: dict
totals:
  description: moved, already_done, skipped, failed, planned, seconds, api_requests, max_in_flight, window, polls.
  returned: always
  type: dict
service:
  description: The host's compute service before and after (None on libvirt); restored=true when it was enabled again after a failure.
  returned: always
  type: dict
not_on_host:
  description:
    - The names or IDs of O(instances) that are not on the host, each with where it is (C(host), None for none) and
      whether it C(exists). Listed only when that changes nothing (a rerun after they were moved, or an instance with
      no host); otherwise the run is refused before anything changes.
  returned: always
  type: list
  elements: dict
diff:
  description: In diff mode, before and after, the host's service and where each instance is (host and state).
  returned: when diff mode is on
  type: dict
reserved_host:
  description:
    - With O(reserved_host), the spare host, the C(changes) made to it (or that check mode would make), its service
      before (and after when enabled), and the failed host's aggregates it was added to. None otherwise.
  returned: always
  type: dict
'''

from ansible_collections.vmops.lifecycle.plugins.module_utils.common import chosen_backend, new_module, open_with, run_module
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest, VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import moves as libvirt_moves
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.moves import OpenStackMoves

POLICY = dict(type='str', choices=['move', 'skip', 'fail'])


def main():
    module = new_module(
        dict(
            host=dict(type='str', required=True),
            mode=dict(type='str', default='drain', choices=['drain', 'evacuate']),
            target_host=dict(type='str'),
            instances=dict(type='list', elements='str'),
            destinations=dict(type='dict'),
            window=dict(type='int'),
            deadline=dict(type='int', default=600),
            deadline_action=dict(type='str', default='abort', choices=['abort', 'force_complete']),
            cold_fallback=dict(type='bool', default=True),
            block_migration=dict(type='str', default='auto', choices=['auto', 'true', 'false']),
            suspended_policy=dict(POLICY, default='move'),
            shelved_policy=dict(POLICY, default='move'),
            rescued_policy=dict(POLICY),
            error_policy=dict(type='str', default='skip', choices=['skip', 'fail', 'move']),
            disable=dict(type='bool', default=True),
            disabled_reason=dict(type='str'),
            restore_service_on_failure=dict(type='bool', default=True),
            fenced=dict(type='bool', default=False),
            force_down=dict(type='bool', default=False),
            power_state=dict(type='str', default='keep', choices=['keep', 'running', 'stopped']),
            lock_during_move=dict(type='bool'),
            poll_interval=dict(type='float', default=0.4),
            progress_file=dict(type='path'),
            migration_uri=dict(type='str'),
            migration_bandwidth=dict(type='int'),
            timeout=dict(type='int', default=3600),
            reserved_host=dict(type='str'),
            shared_storage=dict(type='bool', default=False),
            backup_uri=dict(type='str'),
            backup_pool=dict(type='str'),
            backup_dir=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    run_module(module, converge)


REQUEST_KEYS = ('host', 'mode', 'target_host', 'window', 'deadline', 'deadline_action', 'cold_fallback',
                'block_migration', 'suspended_policy', 'shelved_policy', 'rescued_policy', 'error_policy',
                'disable', 'disabled_reason', 'restore_service_on_failure', 'fenced', 'force_down',
                'power_state', 'lock_during_move', 'instances', 'poll_interval', 'progress_file', 'timeout',
                'retry_budget', 'reserved_host', 'shared_storage', 'destinations')


def converge(module):
    params = module.params
    fields = dict((key, params[key]) for key in REQUEST_KEYS)
    request = moves.MoveRequest(**fields)
    backend_name = chosen_backend(params)
    if backend_name == 'openstack':
        if params['migration_uri'] is not None or params['migration_bandwidth'] is not None:
            raise InvalidRequest('migration_uri and migration_bandwidth apply to the libvirt backend only.')
    else:
        libvirt_moves.validate_options(params)
    moves.validate_request(request, backend_name)
    if backend_name != 'openstack' and params['reserved_host']:
        raise InvalidRequest('reserved_host applies to the OpenStack backend (mode=evacuate) only.')
    if backend_name == 'openstack' and any(params[name] for name in ('backup_uri', 'backup_pool', 'backup_dir')):
        raise InvalidRequest('backup_uri, backup_pool and backup_dir apply to the libvirt backend (mode=evacuate) only.')
    backend = open_with(module, {'openstack': OpenStackMoves, 'libvirt': libvirt_moves.open_backend})
    with backend:
        try:
            result = moves.run(backend, request, check_mode=module.check_mode)
        except VmopsError as error:
            if isinstance(error, InvalidRequest):
                raise
            details = dict(error.details)
            if not module._diff:
                details.pop('diff', None)
            changed = details.pop('changed', False)
            module.fail_json(msg=error.msg, changed=changed, **details)
    if not module._diff:
        result.pop('diff')
    return result


if __name__ == '__main__':
    main()
