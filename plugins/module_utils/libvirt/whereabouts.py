# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a domain is once its move ended, read on both hosts, and what a failed move left on the destination.

A move ends with the worker's word (libvirt said the migration completed, or gave an error) and one
read of the domain on each host.  A host whose libvirtd cannot be reached (the connection keeper
waited out retry_budget once for it; later reads try once) is read as `unknown`, never guessed:

  destination holds it, settled   moved (when the source cannot be read either, the report says so)
  source holds it                 failed, on the source; what the move left on the destination is
                                  removed when the destination answers, else reported
  on neither host                 failed: on neither host
  libvirt said the migration completed, the destination cannot be read
                                  moved as far as libvirt said, state unknown: reported failed, so that
                                  the run does not pass for a clean one
  anything else                   failed, place and state unknown, with what each host said

What a failed move can leave on a destination: the volumes it created there for the copy (a fresh
sparse volume per copied disk; a cold move's copies), and, when the destination's libvirtd went away
mid-migration, the paused incoming QEMU process of the domain (libvirtd kills it when it starts again).
The volumes are deleted once the destination answers and no domain of it uses them; an incoming copy
still there is destroyed only while the source holds the domain, settled.  What cannot be removed is
named in the message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import power
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import _interpret
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import libvirt
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.storage import cleanup_created

FOUND, ABSENT, UNKNOWN = 'found', 'absent', 'unknown'

# One host's view of the domain: found (state, task, persistent, dom), absent, or unknown (why).
Side = collections.namedtuple('Side', 'where state task persistent why dom')


def read_side(conn, domain_id):
    """The domain as one host sees it; never raises for a host that cannot be reached."""
    try:
        dom = conn.lookupByUUIDString(domain_id)
        code, reason = dom.state()
        saved = code == libvirt.VIR_DOMAIN_SHUTOFF and dom.hasManagedSaveImage(0)
        persistent = bool(dom.isPersistent())
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return Side(ABSENT, states.ABSENT, None, None, None, None)
        return Side(UNKNOWN, states.UNKNOWN, None, None, error.get_error_message(), None)
    except VmopsError as error:     # the keeper: the connection dropped and did not come back
        return Side(UNKNOWN, states.UNKNOWN, None, None, error.details.get('service_message') or error.msg, None)
    state, task, _fault = _interpret(code, reason, saved)
    return Side(FOUND, state, task, persistent, None, dom)


def describe(side):
    if side.where == FOUND:
        return side.state + (' (%s)' % side.task if side.task else '')
    if side.where == ABSENT:
        return 'absent'
    return 'unknown'


def places(labels, sides):
    """{host label: what it holds} for the record."""
    return dict((label, describe(side)) for label, side in zip(labels, sides))


def unreachable(label, side):
    return '%s cannot be reached (%s)' % (label, side.why)


def settle(error, src, dst, source_label, target_label, still_there):
    """The MoveStatus of a move that ended: `error` is the worker's (None: libvirt said it completed)."""
    if dst.where == FOUND and not dst.task and src.where != FOUND:
        note = error
        if src.where == UNKNOWN:
            note = '; '.join(filter(None, (error, 'it runs on %s; %s, where a paused copy may remain until its '
                                           'libvirtd starts again' % (target_label, unreachable(source_label, src)))))
        return moves.MoveStatus(True, False, note, target_label, dst.state)
    if src.where == FOUND:
        text = error or still_there
        if error and error != still_there and still_there not in error:
            text = '%s; %s' % (error, still_there)
        if dst.where == FOUND and not dst.task:
            text += '; %s also holds it (%s): left alone' % (target_label, describe(dst))
        return moves.MoveStatus(False, True, text, source_label, src.state)
    if src.where == ABSENT and dst.where == ABSENT:
        return moves.MoveStatus(False, True, '%s: the domain is on neither host' % (error or 'moved'), None,
                                states.ABSENT)
    if error is None and dst.where == UNKNOWN:
        return moves.MoveStatus(True, True, 'libvirt reported the move complete, but %s, so its state there is '
                                'unknown' % unreachable(target_label, dst), target_label, states.UNKNOWN)
    said = []
    for label, side in ((source_label, src), (target_label, dst)):
        said.append(unreachable(label, side) if side.where == UNKNOWN else '%s: %s' % (label, describe(side)))
    text = '%s; where it is now is unknown: %s' % (error or 'the move ended', '; '.join(said))
    return moves.MoveStatus(False, True, text, None, states.UNKNOWN)


def clean_destination(dst_conn, handle, src, dst, target_label):
    """Remove what a failed move left on the destination, or say what stays there.  Returns [what was done
    or stays]; what stays is also kept in handle.data['left'].

    The volumes the move created are deleted when no destination domain uses them (a destination that
    does not hold the domain, or whose unfinished incoming copy was removed).  The incoming copy is
    destroyed only while the source holds the domain, settled."""
    notes, left = [], []
    created = handle.data.get('created') or []
    if dst.where == UNKNOWN:
        if created:
            left.extend(created)
            notes.append('the disk(s) this run created there for the copy stay (%s): delete them once it is back '
                         '(virsh vol-delete PATH)' % ', '.join(created))
        if handle.data.get('incoming_sent'):
            left.append('incoming QEMU process')
            notes.append('a paused incoming QEMU process of the domain may stay there until its libvirtd starts '
                         'again (which removes it)')
        handle.data['left'] = left
        return ['%s: %s' % (unreachable(target_label, dst), '; '.join(notes))] if notes else []
    if dst.where == FOUND and dst.task and not dst.persistent:
        if src.where == FOUND and not src.task:
            try:
                power.destroy(dst.dom)
                notes.append('removed the unfinished incoming copy from %s' % target_label)
            except (libvirt.libvirtError, VmopsError) as error:
                left.append('incoming copy')
                notes.append('the unfinished incoming copy on %s could not be removed: %s'
                             % (target_label, getattr(error, 'msg', None) or error.get_error_message()))
        else:
            left.append('incoming copy')
            notes.append('%s holds an unfinished incoming copy (%s), left alone while the source does not hold '
                         'the domain settled' % (target_label, describe(dst)))
    if created:
        deleted, kept = cleanup_created(dst_conn, created)
        if deleted:
            notes.append('deleted from %s the disk(s) this run created for the copy: %s'
                         % (target_label, ', '.join(deleted)))
        for path, why in sorted(kept.items()):
            left.append(path)
            notes.append('%s stays on %s: %s' % (path, target_label, why))
        handle.data['created'] = [path for path in created if path in kept]
    handle.data['left'] = left
    return notes
