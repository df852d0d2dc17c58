# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incremental backups whatever the backend: the chain rules, the BackupSets contract, the run.

A *point* is one backup of one instance (every disk at one consistent moment), described by a dict:
`name`, `series`, `instance`, `kind` (`full` | `incremental`), `parent` (None for a full), `taken_at`
(ISO 8601 UTC), `complete` (only a point whose record was written last is complete), `disks`,
`quiesced`, and backend extras (`checkpoint` on libvirt, `backups` on OpenStack). Keys starting with an
underscore are the backend's own and never leave the module.

The chain rules (`choose_kind`, `retention_plan`, `chain_to`) read lists of points and nothing else.
A backend implements `BackupSets`; `BackupRun` does the rest the same way for every backend: reads and
plans (check mode stops there), takes, verifies, applies retention, and returns before/after/steps.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import abc
import collections
import datetime

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InstanceNotFound, InvalidRequest, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import NAME_RE, SERIES_RE
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline

FULL = 'full'
INCREMENTAL = 'incremental'
MODES = ('auto', FULL, INCREMENTAL)
LATEST = 'latest'

# state: present (take a point) or restored (restore `point` of `series`); point: a name or 'latest';
# name: the new point's name (generated from the series and the time when None; a complete point of that
# name makes the run a no-op, which is what makes a named backup idempotent); restore_as: a new instance
# made from the point instead of the stopped instance itself.
BackupRequest = collections.namedtuple(
    'BackupRequest', 'instance state series point mode full_every retention quiesce restore_as name timeout '
                     'backup_dir backup_uri backup_pool')
BackupRequest.__new__.__defaults__ = (None, None, None)


# The chain rules -----------------------------------------------------------------------------------

def order_key(point):
    """Points sort by when they were taken, then by name (the time has microseconds)."""
    return (point.get('taken_at') or '', point.get('name') or '')


def newest_complete(points):
    complete = sorted((point for point in points if point.get('complete')), key=order_key)
    return complete[-1] if complete else None


def chain_to(points, name):
    """The chain full..name (oldest first) that restoring `name` needs.

    Refused (InvalidRequest, details `missing`: the link at fault) when the point or any link is
    missing or incomplete, or when a link names no parent."""
    by_name = dict((point.get('name'), point) for point in points)
    chain = []
    wanted, needed_by = name, None
    while True:
        point = by_name.get(wanted)
        if point is None:
            if needed_by is None:
                raise InvalidRequest('No backup point %s in the series.' % wanted, missing=wanted)
            raise InvalidRequest('The chain to %s is broken: %s, the parent of %s, is missing.'
                                 % (name, wanted, needed_by), missing=wanted)
        if not point.get('complete'):
            raise InvalidRequest('The chain to %s is broken: %s is incomplete (its record was never written).'
                                 % (name, wanted), missing=wanted)
        if any(link.get('name') == wanted for link in chain):
            raise InvalidRequest('The chain to %s loops back to %s.' % (name, wanted), missing=wanted)
        chain.append(point)
        if point.get('kind') == FULL:
            return list(reversed(chain))
        if not point.get('parent'):
            raise InvalidRequest('The chain to %s is broken: the increment %s names no parent.' % (name, wanted),
                                 missing=wanted)
        wanted, needed_by = point['parent'], wanted


def choose_kind(points, requested, full_every, broken=None):
    """(kind, parent, why) of the next point.

    requested: full, incremental or auto. `auto` is an increment on the newest complete point unless
    there is none, its chain is broken, the backend says why an increment cannot be taken on it
    (`broken`: the text of BackupSets.broken_reason), or its chain since its full already holds
    `full_every` points (None: no limit). `incremental` without a usable parent is refused."""
    if requested not in MODES:
        raise InvalidRequest('mode must be one of %s, got %r.' % (', '.join(MODES), requested))
    if requested == FULL:
        return FULL, None, 'a full backup was asked for (mode=full)'
    newest = newest_complete(points)
    unusable, missing = None, None
    if newest is None:
        unusable = 'the series holds no complete point yet'
    else:
        try:
            chain = chain_to(points, newest['name'])
        except InvalidRequest as error:
            unusable, missing = error.msg[:1].lower() + error.msg[1:].rstrip('.'), error.details.get('missing')
        else:
            if broken:
                unusable, missing = 'an increment on %s cannot be taken: %s' % (newest['name'], broken), newest['name']
    if requested == INCREMENTAL:
        if unusable:
            raise InvalidRequest('mode=incremental needs a usable parent, and %s; take a full backup '
                                 '(mode=full or auto).' % unusable, missing=missing)
        return INCREMENTAL, newest['name'], 'an increment on %s was asked for (mode=incremental)' % newest['name']
    if unusable:
        return FULL, None, 'full: %s' % unusable
    if full_every and len(chain) >= full_every:
        return FULL, None, ('full: the chain since %s already holds %d points (full_every=%d)'
                            % (chain[0]['name'], len(chain), full_every))
    return INCREMENTAL, newest['name'], 'incremental on %s (point %d of its chain, full_every=%s)' % (
        newest['name'], len(chain) + 1, full_every)


def retention_plan(points, keep):
    """(delete, kept, why): which points retention removes, oldest first.

    Keeps the newest `keep` complete points and every point any of them depends on (parents are
    followed by name, complete or not); keeps an incomplete point newer than the newest complete one
    (a run may still be writing it); deletes the rest. A chain is only ever cut by a new full, so a
    deleted point is never a parent of a kept one. `why` maps each point's name to the reason."""
    if keep is None or keep < 1:
        raise InvalidRequest('retention must be at least 1 (the new point counts), got %s.' % keep)
    by_name = dict((point.get('name'), point) for point in points)
    ordered = sorted(points, key=order_key)
    complete = [point for point in ordered if point.get('complete')]
    heads = complete[-keep:]
    newest = complete[-1] if complete else None
    why = {}
    for head in heads:
        why[head['name']] = 'one of the newest %d complete points' % keep
    for point in ordered:
        if not point.get('complete') and (newest is None or order_key(point) > order_key(newest)):
            why[point['name']] = 'incomplete but newer than the newest complete point (a run may still write it)'
    for root in [point for point in reversed(ordered) if point['name'] in why]:
        child, parent = root['name'], root.get('parent')
        while parent and parent in by_name and parent not in why:
            why[parent] = 'needed by %s' % child
            child, parent = parent, by_name[parent].get('parent')
    kept, delete = [], []
    for point in ordered:
        name = point.get('name')
        if name in why:
            kept.append(point)
        else:
            why[name] = ('incomplete, older than the newest complete point' if not point.get('complete')
                         else 'older than the newest %d complete points, and no kept point needs it' % keep)
            delete.append(point)
    return delete, kept, why


def public(point):
    """A point without its private keys, for the module result."""
    if point is None:
        return None
    return dict((key, value) for key, value in point.items() if not str(key).startswith('_'))


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


def iso_utc(moment):
    return moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def generated_name(series, moment):
    """`<series>-<UTC time to the millisecond>`: two points of a series in the same second still differ."""
    return '%s-%s%03dZ' % (series, moment.strftime('%Y%m%dT%H%M%S.'), moment.microsecond // 1000)


def validate_backup_request(model, request):
    """Refuse bad or contradictory input before any connection."""
    if not request.instance:
        raise InvalidRequest('instance is required (a name or a UUID).')
    if not request.series or not SERIES_RE.match(request.series):
        raise InvalidRequest('series %r: required; use letters, digits, ".", "_" and "-" (at most 64, starting '
                             'with a letter or digit).' % request.series)
    if request.mode not in MODES:
        raise InvalidRequest('mode must be one of %s, got %r.' % (', '.join(MODES), request.mode))
    if request.full_every is not None and request.full_every < 1:
        raise InvalidRequest('full_every must be at least 1 (1: every point is a full), got %s.'
                             % request.full_every)
    if request.retention is not None and request.retention < 1:
        raise InvalidRequest('retention must be at least 1 (the new point counts), got %s.' % request.retention)
    if request.name is not None and not NAME_RE.match(request.name):
        raise InvalidRequest('name %r: use letters, digits, ".", "_", ":", "+" and "-" (at most 128, starting '
                             'with a letter or digit).' % request.name)
    if request.state == 'present':
        given = [name for name in ('point', 'restore_as') if getattr(request, name) is not None]
        if given:
            raise InvalidRequest('%s only apply to state=restored.' % ', '.join(given))
    elif request.state == 'restored':
        if not request.point:
            raise InvalidRequest('state=restored needs point: the name of a point of the series, or latest.')
        if request.retention is not None or request.name is not None:
            raise InvalidRequest('retention and name apply when a point is taken (state=present).')
        if request.restore_as is not None and not NAME_RE.match(request.restore_as):
            raise InvalidRequest('restore_as %r is not a usable instance name.' % request.restore_as)
    else:
        raise InvalidRequest('state must be present or restored, got %r.' % request.state)
    if request.quiesce not in ('auto', 'required', 'off'):
        raise InvalidRequest('quiesce must be auto, required or off, got %r.' % request.quiesce)
    if model.name == 'libvirt':
        if request.backup_dir is not None and not request.backup_dir.startswith('/'):
            raise InvalidRequest('backup_dir must be an absolute path on the hypervisor host, got %r.'
                                 % request.backup_dir)
        if request.backup_dir is not None and request.backup_pool is not None:
            raise InvalidRequest('backup_dir and backup_pool both say where the backups live: give one of them.')
    else:
        given = [name for name in ('backup_dir', 'backup_uri', 'backup_pool') if getattr(request, name) is not None]
        if given:
            raise InvalidRequest('%s only apply to the libvirt backend.' % ', '.join(given))
    if request.timeout is None or request.timeout <= 0:
        raise InvalidRequest('timeout must be a positive number of seconds, got %s.' % request.timeout)


# The contract of a backend ----------------------------------------------------------------------------

class BackupSets(abc.ABC):
    """The backend half of instance_backup (one per backend, over the backend's one connection).

    `instance` below is what `find_instance` returned. BackupRun sets `deadline` (core.waiter.Deadline,
    the run's `timeout`) before calling any verb; a verb that waits keeps within it.
    Every verb raises InvalidRequest for what cannot be done as asked (nothing changed), and another
    VmopsError for a failure on the way."""

    model = None
    deadline = None

    @classmethod
    def for_request(cls, backend, request):     # pylint: disable=unused-argument
        """The sets for this run."""
        return cls(backend)

    @abc.abstractmethod
    def find_instance(self, identifier):
        """The instance (a backend reference) or None."""

    @abc.abstractmethod
    def describe(self, instance):
        """{'name', 'id', 'state', ...}: the instance as the result shows it (before and after)."""

    @abc.abstractmethod
    def points(self, instance, series):
        """Every point of the series for this instance, complete or not, in any order."""

    @abc.abstractmethod
    def broken_reason(self, instance, point):
        """None, or why an increment on `point` cannot be taken (libvirt: its checkpoint is gone)."""

    @abc.abstractmethod
    def take(self, instance, name, series, kind, parent, quiesce):
        """Take a point (parent: the parent point's dict, None for a full); return it, complete."""

    @abc.abstractmethod
    def delete(self, point):
        """Remove a whole point (everything it holds); a point already gone is no error."""

    @abc.abstractmethod
    def restore(self, chain, target):
        """Restore chain[-1] from chain (full first); target: {'instance', 'restore_as'}. Returns a dict
        saying what was made (names, paths or ids, sizes, verification)."""

    def check_take(self, instance, kind, parent, quiesce):     # pylint: disable=unused-argument
        """Reads only: refuse (InvalidRequest) what `take` could not do, before anything changes
        (a disk format, a volume back end). Returns a dict the check-mode result shows."""
        return {}

    def check_restore(self, chain, target):     # pylint: disable=unused-argument
        """Reads only: refuse (InvalidRequest) a restore that cannot be done (a running target, a name in
        use). Returns a dict the check-mode result shows; {'done': True} when the target already holds
        that point (the run is then a no-op)."""
        return {}

    def verify(self, instance, point):
        """Raise unless the point is complete when read back (the backend may check more)."""
        for found in self.points(instance, point['series']):
            if found.get('name') == point['name'] and found.get('complete'):
                return
        raise VmopsError('Backup point %s is not complete when read back.' % point['name'])

    def location(self):
        """Where the backend points, for messages."""
        return None

    def request_count(self):
        return None

    def close(self):
        """Release what the sets opened."""


# The run ----------------------------------------------------------------------------------------------

class BackupRun(object):
    """One run of instance_backup against one BackupSets: `result()` converges and returns the result.

    A failure is re-raised with `steps` (every step sent, `done` false for the one that failed) and
    `instance` (before, and `executed`: whether anything was sent) added to its details."""

    def __init__(self, sets, request, check_mode=False, clock=now_utc):
        self.sets = sets
        self.request = request
        self.check_mode = check_mode
        self.clock = clock
        self.steps = []
        self.deadline = Deadline(request.timeout)
        self.before = None

    def result(self):
        validate_backup_request(self.sets.model, self.request)
        self.sets.deadline = self.deadline
        instance = self.sets.find_instance(self.request.instance)
        if instance is None:
            raise InstanceNotFound('No instance %s in %s.' % (self.request.instance, self.sets.location()))
        self.before = self.sets.describe(instance)
        try:
            if self.request.state == 'restored':
                return self._restore(instance)
            return self._backup(instance)
        except VmopsError as error:
            error.details.setdefault('steps', self.steps)
            error.details.setdefault('instance', dict(before=self.before, executed=bool(self.steps)))
            raise

    def _step(self, verb, **what):
        step = dict(what, step=verb, done=False)
        self.steps.append(step)
        return step

    def _backup(self, instance):
        request = self.request
        points = list(self.sets.points(instance, request.series))
        names_before = _names(points)
        if request.name is not None:
            same = [point for point in points if point.get('name') == request.name]
            if same and same[0].get('complete'):
                return self._retention_only(instance, points, same[0], names_before)
        newest = newest_complete(points)
        broken = self.sets.broken_reason(instance, newest) if newest is not None else None
        kind, parent_name, why = choose_kind(points, request.mode, request.full_every, broken)
        parent = dict((point['name'], point) for point in points).get(parent_name)
        plan = self.sets.check_take(instance, kind, parent, request.quiesce) or {}
        moment = self.clock()
        name = request.name or generated_name(request.series, moment)
        leftovers = [point for point in points if point.get('name') == name]
        if self.check_mode:
            planned = dict(plan, name=name, series=request.series, kind=kind, parent=parent_name,
                           taken_at=iso_utc(moment), complete=True, status='planned')
            deleted, kept = self._plan_retention(points + [planned])
            return self._result('backup', True, planned, why, deleted, kept, names_before,
                                [p for p in points if p['name'] not in _names(deleted)] + [planned])
        for leftover in leftovers:
            step = self._step('delete', point=name, why='incomplete leftover of an earlier run')
            self.sets.delete(leftover)
            step['done'] = True
        step = self._step('take', point=name, kind=kind, parent=parent_name)
        point = self.sets.take(instance, name, request.series, kind, parent, request.quiesce)
        step['done'] = True
        step = self._step('verify', point=name)
        self.sets.verify(instance, point)
        step['done'] = True
        points = [p for p in self.sets.points(instance, request.series) if p.get('name') != name] + [point]
        deleted = self._apply_retention(points)
        after_points = [p for p in points if p['name'] not in _names(deleted)]
        return self._result('backup', True, point, why, deleted, _names(after_points), names_before,
                            after_points, instance=instance)

    def _retention_only(self, instance, points, existing, names_before):
        why = 'point %s already exists' % existing['name']
        if self.check_mode:
            deleted, kept = self._plan_retention(points)
        else:
            deleted = self._apply_retention(points)
            kept = _names([p for p in points if p['name'] not in _names(deleted)])
        after_points = [p for p in points if p['name'] not in _names(deleted)]
        return self._result('none' if not deleted else 'retention', bool(deleted), existing, why, deleted, kept,
                            names_before, after_points, instance=None if self.check_mode else instance)

    def _plan_retention(self, points):
        if not self.request.retention:
            return [], _names(points)
        delete, kept, why = retention_plan(points, self.request.retention)
        return [dict(public(point), why=why[point['name']]) for point in delete], _names(kept)

    def _apply_retention(self, points):
        """Delete what retention_plan says, newest first: a failure half-way never leaves a kept
        point, or a deleted one's child, without its parent."""
        deleted, _kept = self._plan_retention(points)
        by_name = dict((point['name'], point) for point in points)
        for record in sorted(deleted, key=order_key, reverse=True):
            step = self._step('delete', point=record['name'], why=record['why'])
            self.sets.delete(by_name[record['name']])
            step['done'] = True
        return deleted

    def _restore(self, instance):
        request = self.request
        points = list(self.sets.points(instance, request.series))
        name = request.point
        if name == LATEST:
            newest = newest_complete(points)
            if newest is None:
                raise InvalidRequest('Series %s of %s holds no complete point to restore.'
                                     % (request.series, request.instance))
            name = newest['name']
        if name not in _names(points):
            raise InvalidRequest('No point %s in series %s of %s; a point of another instance cannot be restored '
                                 'through this one. Nothing was changed.' % (name, request.series, request.instance),
                                 missing=name)
        chain = chain_to(points, name)
        target = {'instance': instance, 'restore_as': request.restore_as}
        plan = self.sets.check_restore(chain, target) or {}
        chain_names = _names(chain)
        if plan.get('done'):
            return self._result('none', False, chain[-1], 'the target already holds point %s' % name, [], [],
                                _names(points), points, chain=chain_names, restored=plan)
        if self.check_mode:
            return self._result('restore', True, chain[-1], 'restore %s from %d point(s)' % (name, len(chain)),
                                [], [], _names(points), points, chain=chain_names, restored=dict(plan, status='planned'))
        step = self._step('restore', point=name, chain=chain_names, restore_as=request.restore_as)
        restored = self.sets.restore(chain, target)
        step['done'] = True
        return self._result('restore', True, chain[-1], 'restored %s from %d point(s)' % (name, len(chain)),
                            [], [], _names(points), points, chain=chain_names, restored=restored, instance=instance)

    def _result(self, action, changed, point, why, deleted, kept, names_before, after_points, chain=None,
                restored=None, instance=None):
        after = self.sets.describe(instance) if instance is not None else self.before
        described = dict(after, before=self.before, backend=self.sets.model.name, location=self.sets.location(),
                         api_requests=self.sets.request_count())
        names_after = _names(after_points)
        result = {'changed': changed, 'action': action, 'point': public(point), 'why': why,
                  'deleted': deleted, 'kept': kept, 'steps': self.steps, 'instance': described,
                  'points': names_after, 'timings': {'total_seconds': round(self.deadline.elapsed(), 3)},
                  'diff': {'before': {'points': names_before}, 'after': {'points': names_after}}}
        if chain is not None:
            result['chain'] = chain
            result['restored'] = restored
        return result


def _names(points):
    return [point['name'] for point in sorted(points, key=order_key)]
