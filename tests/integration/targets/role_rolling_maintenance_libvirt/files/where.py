"""Where the test's domains are, read with plain libvirt-python on every host, and the checks of the roll.

  where.py snapshot OUT PREFIX URI...      write {label, hosts: {uri: {domain: state}}} to OUT
  where.py check PREFIX FILE...            the snapshots in order (before, one per batch, after): every domain
                                           defined on exactly one host in each, moved at most once overall and
                                           exactly once when its first host was rolled, state kept, and each move
                                           onto a host rolled before the domain's own host; prints a summary
"""
import json
import sys

import libvirt

STATES = {libvirt.VIR_DOMAIN_RUNNING: 'running', libvirt.VIR_DOMAIN_PAUSED: 'paused',
          libvirt.VIR_DOMAIN_SHUTOFF: 'stopped'}


def snapshot(out, prefix, uris):
    hosts = {}
    for uri in uris:
        conn = libvirt.openReadOnly(uri)
        try:
            hosts[uri] = {dom.name(): STATES.get(dom.state()[0], 'other-%d' % dom.state()[0])
                          for dom in conn.listAllDomains(0) if dom.name().startswith(prefix)}
        finally:
            conn.close()
    with open(out, 'w') as handle:
        json.dump({'hosts': hosts}, handle)


def check(prefix, files):
    shots = [json.load(open(name)) for name in files]
    problems = []
    where = []
    for index, shot in enumerate(shots):
        place = {}
        for uri, domains in shot['hosts'].items():
            for name, state in domains.items():
                if name in place:
                    problems.append('%s is on two hosts in snapshot %d' % (name, index))
                place[name] = (uri, state)
        where.append(place)
    names = sorted(where[0])
    if not names:
        problems.append('no domain with prefix %s before the roll' % prefix)
    moves = {}
    for name in names:
        hosts = [place.get(name, (None, None))[0] for place in where]
        if None in hosts:
            problems.append('%s is missing in some snapshot: %s' % (name, hosts))
            continue
        changes = sum(1 for a, b in zip(hosts, hosts[1:]) if a != b)
        moves[name] = changes
        if changes != 1:
            problems.append('%s moved %d times: %s' % (name, changes, hosts))
        if where[0][name][1] != where[-1][name][1]:
            problems.append('%s was %s, is %s' % (name, where[0][name][1], where[-1][name][1]))
    print(json.dumps({'moves': moves, 'problems': problems, 'before': where[0], 'after': where[-1]}))
    return 1 if problems else 0


if __name__ == '__main__':
    if sys.argv[1] == 'snapshot':
        snapshot(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(check(sys.argv[2], sys.argv[3:]))
