# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of instances, whatever the backend: validation, naming, series and retention.

A backend-specific snapshot driver (openstack/snapshot.py, libvirt/snapshot.py: SnapshotDriver
below) implements the few verbs below; `ensure_snapshot` does the
rest the same way for both:

  find_instance(identifier)            -> ref or None
  observe(ref)                         -> backend Observation (state of the instance)
  get(ref, identifier, name)           -> the snapshot record of that name, or None
                                          (InvalidRequest when the name belongs to another instance)
  series(ref, identifier, series)      -> complete snapshots of the series, oldest first
  plan(ref, request)                   -> what a create would take: {kind, quiesced, contains}
                                          (InvalidRequest when it cannot be done as asked)
  create(ref, request, name, deadline) -> (record, timings): a verified, complete snapshot
  delete(record, deadline)             -> removes a snapshot and everything it holds
  incomplete(ref, identifier, name)    -> leftovers of an earlier failed run under that name (deleted
                                          before a new attempt), list of records

A record is the `snapshot` dict of the module result (see instance_snapshot's RETURN), plus
private keys starting with an underscore that never leave the module.

Restore-side code finds snapshots with `newest_in_series()` / `find_named()`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import collections
import datetime
import re

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InstanceNotFound, InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline

# backup_dir, backup_uri, backup_pool: libvirt: where the backups live (the directory, the host that holds it,
# or a storage pool of that host instead of the directory); the last two default to None.
SnapshotRequest = collections.namedtuple(
    'SnapshotRequest', 'instance state name series retention include_volumes quiesce metadata backup_dir '
                       'wait timeout backup_uri backup_pool')
SnapshotRequest.__new__.__defaults__ = (None, None)

# A snapshot name becomes a directory name on libvirt and an image name on OpenStack.
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$')
SERIES_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
RESERVED_PREFIX = 'vmops_'
DEFAULT_BACKUP_DIR = '/var/lib/libvirt/images/vmops-backups'

KINDS = ('image', 'volume_backed', 'libvirt_backup', 'libvirt_internal')


class SnapshotDriver(abc.ABC):
    """The backend half of instance_snapshot; the verbs are described in this file's docstring."""

    model = None

    @classmethod
    def for_request(cls, backend, request):     # pylint: disable=unused-argument
        """The driver for this run (over the backend's one connection)."""
        return cls(backend)

    @abc.abstractmethod
    def find_instance(self, identifier):
        """ref or None."""

    @abc.abstractmethod
    def observe(self, ref):
        """The backend's Observation of the instance."""

    @abc.abstractmethod
    def get(self, ref, identifier, name):
        """The snapshot record of that name, or None."""

    @abc.abstractmethod
    def series(self, ref, identifier, series):
        """Complete snapshots of the series, oldest first."""

    @abc.abstractmethod
    def plan(self, ref, request):
        """What a create would take: {kind, quiesced, contains}."""

    @abc.abstractmethod
    def create(self, ref, request, name, deadline):
        """(record, timings): a verified, complete snapshot."""

    @abc.abstractmethod
    def delete(self, record, deadline):
        """Remove a snapshot and everything it holds."""

    @abc.abstractmethod
    def incomplete(self, ref, identifier, name):
        """Leftovers of an earlier failed run under that name."""

    @abc.abstractmethod
    def location(self):
        """Where the backend points, for messages."""

    def request_count(self):
        return None

    def close(self):
        """Release what the driver opened."""


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


def iso_utc(moment):
    """ISO 8601 UTC with microseconds: snapshots taken in the same second still sort."""
    return moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def generated_name(series, moment):
    return '%s-%s' % (series, moment.strftime('%Y%m%dT%H%M%SZ'))


def validate_snapshot_request(model, request):
    """Refuse bad or contradictory input before any connection."""
    if not request.instance:
        raise InvalidRequest('instance is required (a name or a UUID).')
    if request.retention is not None:
        if request.retention < 1:
            raise InvalidRequest('retention must be at least 1 (the new snapshot counts), got %s.'
                                 % request.retention)
        if not request.series:
            raise InvalidRequest('retention keeps the newest snapshots of a series: set series too.')
    if request.series is not None and not SERIES_RE.match(request.series):
        raise InvalidRequest('series %r: use letters, digits, ".", "_" and "-" (at most 64, starting with '
                             'a letter or digit).' % request.series)
    if request.name is not None and not NAME_RE.match(request.name):
        raise InvalidRequest('name %r: use letters, digits, ".", "_", ":", "+" and "-" (at most 128, starting '
                             'with a letter or digit).' % request.name)
    if request.state == 'absent':
        if not request.name:
            raise InvalidRequest('state=absent deletes one snapshot: give its name.')
        if request.retention is not None:
            raise InvalidRequest('retention applies when a snapshot is taken (state=present), not with absent.')
    elif not request.name and not request.series:
        raise InvalidRequest('Give the snapshot a name, or a series to generate one from.')
    for key, value in (request.metadata or {}).items():
        if str(key).startswith(RESERVED_PREFIX):
            raise InvalidRequest('metadata key %s: keys starting with %s are the module\'s own.'
                                 % (key, RESERVED_PREFIX))
        if isinstance(value, (dict, list)):
            raise InvalidRequest('metadata values must be strings (key %s).' % key)
    if model.name == 'libvirt':
        if request.backup_dir is not None and not request.backup_dir.startswith('/'):
            raise InvalidRequest('backup_dir must be an absolute path on the hypervisor host, got %r.'
                                 % request.backup_dir)
        if request.backup_dir is not None and request.backup_pool is not None:
            raise InvalidRequest('backup_dir and backup_pool both say where the backups live: give one of them.')
    else:
        given = [name for name in ('backup_uri', 'backup_pool') if getattr(request, name) is not None]
        if given:
            raise InvalidRequest('%s only apply to the libvirt backend.' % ', '.join(given))
    if request.timeout <= 0:
        raise InvalidRequest('timeout must be a positive number of seconds, got %s.' % request.timeout)


def sort_key(record):
    return (record.get('created_at') or '', record.get('name') or '')


def to_delete(series_records, keep, new_record):
    """Which snapshots of a series retention removes: all but the newest `keep`, never the new one.

    `series_records` are the complete snapshots of the series, the new one included.
    """
    ordered = sorted(series_records, key=sort_key)
    others = [record for record in ordered if record['id'] != new_record['id']]
    # The new snapshot always counts as one of the kept ones, whatever its timestamp says.
    surplus = len(others) - (keep - 1)
    return others[:surplus] if surplus > 0 else []


def public(record):
    """A record without its private keys, for the module result."""
    if record is None:
        return None
    return dict((key, value) for key, value in record.items() if not key.startswith('_'))


def newest_in_series(driver, ref, identifier, series):
    """The newest complete snapshot of `series` for the instance (ref may be None when it is gone)."""
    records = sorted(driver.series(ref, identifier, series), key=sort_key)
    return records[-1] if records else None


def find_named(driver, ref, identifier, name):
    """The complete snapshot called `name` of the instance, or None."""
    return driver.get(ref, identifier, name)


def ensure_snapshot(driver, request, check_mode=False):
    """Converge: one snapshot present (plus retention) or absent. Returns the module result."""
    validate_snapshot_request(driver.model, request)
    deadline = Deadline(request.timeout)
    ref = driver.find_instance(request.instance)
    before = driver.observe(ref) if ref is not None else None
    if request.state == 'absent':
        return _ensure_absent(driver, request, ref, before, deadline, check_mode)
    if ref is None:
        raise InstanceNotFound('No instance %s in %s.' % (request.instance, driver.location()))
    if before.state == states.ERROR:
        raise InvalidRequest('Instance %s is in error (%s); snapshot it once it is repaired.'
                             % (request.instance, before.fault))
    name = request.name or generated_name(request.series, now_utc())
    existing = driver.get(ref, request.instance, name)
    if existing is not None:
        if request.series and existing.get('series') not in (None, request.series):
            raise InvalidRequest('Snapshot %s already exists in series %s, not %s.'
                                 % (name, existing.get('series'), request.series))
        # Retention still applies on a repeat (a smaller retention takes effect without a new snapshot).
        deleted = _retention(driver, request, ref, existing, deadline, check_mode)
        return _result(driver, request, ref, before, before, existing, bool(deleted), deleted,
                       {'total_seconds': round(deadline.elapsed(), 3), 'guest_paused_seconds': 0.0}, 'none')
    plan = driver.plan(ref, request)
    if check_mode:
        contains = [dict(item, id_or_path=item['id_or_path'].replace('<name>', name))
                    if isinstance(item.get('id_or_path'), str) else item for item in plan.get('contains', [])]
        planned = dict(plan, name=name, series=request.series, id=None, status='planned',
                       backend=driver.model.name, contains=contains)
        deleted = _retention(driver, request, ref, planned, deadline, check_mode, planned_new=True)
        return _result(driver, request, ref, before, before, planned, True, deleted,
                       {'total_seconds': round(deadline.elapsed(), 3), 'guest_paused_seconds': 0.0}, 'create')
    for leftover in driver.incomplete(ref, request.instance, name):
        driver.delete(leftover, deadline)
    record, timings = driver.create(ref, request, name, deadline)
    deleted = _retention(driver, request, ref, record, deadline, check_mode)
    after = driver.observe(ref)
    timings = dict(timings, total_seconds=round(deadline.elapsed(), 3))
    return _result(driver, request, ref, before, after, record, True, deleted, timings, 'create')


def _retention(driver, request, ref, new_record, deadline, check_mode, planned_new=False):
    if not request.retention:
        return []
    records = list(driver.series(ref, request.instance, request.series))
    if planned_new or all(record['id'] != new_record['id'] for record in records):
        records.append(new_record)
    doomed = to_delete(records, request.retention, new_record)
    if not check_mode:
        for record in doomed:
            driver.delete(record, deadline)
    return [public(record) for record in doomed]


def _ensure_absent(driver, request, ref, before, deadline, check_mode):
    existing = driver.get(ref, request.instance, request.name)
    leftovers = driver.incomplete(ref, request.instance, request.name)
    doomed = ([existing] if existing is not None else []) + list(leftovers)
    if doomed and not check_mode:
        for record in doomed:
            driver.delete(record, deadline)
    timings = {'total_seconds': round(deadline.elapsed(), 3), 'guest_paused_seconds': 0.0}
    return _result(driver, request, ref, before, before, None, bool(doomed), [public(r) for r in doomed],
                   timings, 'delete' if doomed else 'none')


def _instance(driver, observation):
    if observation is None:
        return {'state': states.ABSENT, 'id': None, 'name': None, 'details': {}}
    return {'name': observation.name, 'id': observation.id, 'state': observation.state,
            'task': observation.task, 'details': dict(observation.details)}


def _result(driver, request, ref, before, after, record, changed, deleted, timings, action):
    snapshot = public(record)
    instance = dict(_instance(driver, after), before=_instance(driver, before),
                    backend=driver.model.name, location=driver.location(),
                    api_requests=driver.request_count())
    exists_before = action == 'delete' or (action == 'none' and record is not None)
    diff = {'before': {'snapshot': request.name if exists_before else None, 'deleted': []},
            'after': {'snapshot': None if action == 'delete' else (snapshot or {}).get('name'),
                      'deleted': [item.get('name') for item in deleted]}}
    return {'changed': changed, 'action': action, 'snapshot': snapshot, 'deleted': deleted,
            'timings': timings, 'instance': instance, 'diff': diff}
