# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checkpoints that follow a domain when host_evacuate moves it (so instance_backup chains go on).

A checkpoint has two halves: its data, a persistent dirty bitmap per disk inside the disk image, and its
definition, libvirt metadata of the host that holds the domain.  QEMU carries the bitmaps (a live move that
copies the disks sends them with the storage; a shared or copied qcow2 holds them once the guest is shut
down), libvirt carries no definition.  So a move reads the definitions on the source before it starts
(capture) and redefines them on the destination once the domain is there (carry), with libvirt's
REDEFINE_VALIDATE: a definition whose bitmap is not in the running QEMU is refused, so nothing is redefined
that a backup could not build on.  What is not carried is said, with why; instance_backup's next point is
then a full that says why too, so a move never breaks a chain silently.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import VmopsError
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import act, error_text, libvirt


def capture(dom):
    """The domain's checkpoint definitions, parents first: [(name, parent or None, xml)].  Raises what
    libvirt raised (the caller reports it: the move goes on, the chain is said to be cut)."""
    found = dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)
    captured = []
    for checkpoint in found:
        try:
            parent = checkpoint.getParent(0).getName()
        except libvirt.libvirtError:
            parent = None       # a root checkpoint has none
        captured.append((checkpoint.getName(), parent,
                         checkpoint.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN)))
    return captured


def carry(dom, captured):
    """Redefine `captured` on `dom` (the domain on its new host), validated against its bitmaps.
    Returns {'carried': [names], 'lost': [names], 'why': text or None}.  A checkpoint whose parent was not
    carried is not redefined either (an increment on it would miss the parent's changes)."""
    report = {'carried': [], 'lost': [], 'why': None}
    if not captured:
        return report
    reasons = []
    try:
        active = dom.isActive()
    except libvirt.libvirtError as error:
        active, reasons = False, ['the domain could not be read on the destination (%s)' % error_text(error)]
    if not active:
        return not_carried(captured, '; '.join(reasons) or (
            'the domain is not running on the destination, and libvirt checks a checkpoint\'s bitmaps only in a '
            'running domain'))
    flags = libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE | libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE
    for name, parent, xml in captured:
        if parent is not None and parent not in report['carried']:
            report['lost'].append(name)
            continue
        try:
            act(dom, 'checkpointCreateXML', (xml, flags))
        except Exception as error:  # pylint: disable=broad-except
            report['lost'].append(name)
            reasons.append('%s: %s' % (name, error_text(error)))
            continue
        report['carried'].append(name)
    if report['lost']:
        report['why'] = '; '.join(reasons) or 'their parent checkpoint was not carried'
    return report


def not_carried(captured, why):
    """The report of a move after which none of `captured` could be redefined."""
    return {'carried': [], 'lost': [name for name, _parent, _xml in captured], 'why': why}


def describe(report):
    """One clause for the move's steps."""
    if not report['lost']:
        return 'checkpoints redefined on the destination: %s' % ', '.join(report['carried'])
    text = 'checkpoints not carried: %s (%s); the next instance_backup point is a full' % (
        ', '.join(report['lost']), report['why'])
    if report['carried']:
        text = 'checkpoints redefined on the destination: %s; %s' % (', '.join(report['carried']), text)
    return text


# --- a move's side (migration.py's workers, and a migration adopted by a rerun) ----------------------

def before_move(handle, dom):
    """The domain's checkpoint definitions, read on the source before its move (libvirt moves none of
    them); a failed read is said in the record (`report`) and the move goes on."""
    try:
        return capture(dom)
    except (libvirt.libvirtError, VmopsError) as error:
        why = 'its checkpoints could not be read on the source (%s); the next instance_backup point is a full' % (
            error_text(error))
        handle.data['report'] = {'checkpoints': {'carried': [], 'lost': [], 'why': why}}
        handle.data['job'].steps.append(why)
        return []


def after_move(handle, dst, captured):
    """Redefine `captured` on the destination (dst: a connection there).  The move has happened whatever
    this finds, so nothing raises: the record says what was carried and what was not."""
    if not captured:
        return
    try:
        report = carry(dst.lookupByUUIDString(handle.id), captured)
    except (libvirt.libvirtError, VmopsError) as error:
        report = not_carried(captured, 'the domain could not be found on the destination (%s)' % error_text(error))
    handle.data['report'] = {'checkpoints': report}
    handle.data['job'].steps.append(describe(report))
