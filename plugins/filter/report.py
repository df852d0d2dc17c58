# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles' reports: one data model (report_model), written as Markdown or as HTML with an inline SVG
timeline of the window; and as_list, which turns a survey's comma-separated text into a list.

A record is what the maintenance_window or disaster_recovery role keeps in its result fact: host,
outcome, failure, started, finished, service {before, after}, phases, servers (host_evacuate's
per-instance records), plan (check mode), totals, and optional extras (home, ready, power, restored).
Pure functions: no I/O, nothing but the standard library, so that they are tested as plain Python.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import html

# Timestamps as the roles (microseconds) and host_evacuate (milliseconds) write them.
TIME_FORMATS = ('%Y-%m-%dT%H:%M:%S.%fZ', '%Y-%m-%dT%H:%M:%SZ', '%Y-%m-%dT%H:%M:%S.%f', '%Y-%m-%dT%H:%M:%S')

# How a server's move is coloured: by how it moved and how that ended.
KIND_COLOURS = (
    ('live', '#2b7bb9', 'live migration'),
    ('cold', '#8e44ad', 'cold migration'),
    ('evacuate', '#16a085', 'evacuation'),
    ('fallback', '#e67e22', 'fallback (live -> cold)'),
    ('failed', '#c0392b', 'failed'),
    ('in_flight', '#95a5a6', 'still in flight'),
    ('other', '#7f8c8d', 'other'),
)
PHASE_COLOURS = ('#d6eaf8', '#d5f5e3', '#fcf3cf', '#fadbd8', '#e8daef', '#d0ece7')
# Outcomes with no time span of their own: listed in the tables, no move.
WITHOUT_BAR = ('skipped', 'planned', 'not_started')


# The model ----------------------------------------------------------------------------------------

def parse_time(value):
    if not value:
        return None
    for fmt in TIME_FORMATS:
        try:
            return datetime.datetime.strptime(str(value), fmt)
        except ValueError:
            continue
    return None


def seconds_after(value, origin):
    moment, start = parse_time(value), parse_time(origin)
    if moment is None or start is None:
        return None
    return round((moment - start).total_seconds(), 1)


def move_kind(server):
    """live, cold, evacuate, fallback (more than one attempt, e.g. live then cold), failed, in_flight."""
    if server.get('outcome') == 'failed':
        return 'failed'
    if server.get('outcome') == 'in_flight':
        return 'in_flight'
    attempts = [a for a in (server.get('attempts') or []) if a]
    if len(set(attempts)) > 1:
        return 'fallback'
    move = server.get('move')
    return move if move in ('live', 'cold', 'evacuate') else 'other'


def _service(record, when):
    service = record.get('service')
    if isinstance(service, dict) and isinstance(service.get(when), dict):
        return service[when]
    return record.get('service_' + when) or {}


def _service_text(service):
    if not service or not service.get('status'):
        return None
    text = '%s, %s' % (service.get('status'), service.get('state') or '?')
    if service.get('forced_down'):
        text += ', forced down'
    if service.get('disabled_reason'):
        text += ' ("%s")' % service['disabled_reason']
    return text


def _server_row(server, origin, home):
    attempts = [a for a in (server.get('attempts') or []) if a]
    chain = ' -> '.join(attempts) if len(attempts) > 1 else (server.get('move') or '-')
    back = home.get(server.get('id'))
    return {
        'name': server.get('name') or server.get('id') or '?',
        'id': server.get('id'),
        'state_before': server.get('state_before') or '?',
        'state_after': server.get('state_after') or '-',
        'locked': bool(server.get('locked')),
        'move': chain,
        'kind': move_kind(server),
        'source': server.get('from') or '?',
        'target': server.get('to') or '-',
        'start': seconds_after(server.get('started'), origin),
        'end': seconds_after(server.get('finished'), origin),
        'seconds': server.get('seconds'),
        'outcome': server.get('outcome') or '?',
        'home': ('%s at +%s (%s)' % (back.get('outcome'), seconds_after(back.get('finished'), origin), back.get('to'))
                 if back else '-'),
        'note': server.get('message') or '',
    }


def _section(record):
    origin = record.get('started')
    home = dict((entry.get('id'), entry) for entry in (record.get('home') or []))
    outcome = record.get('outcome') or '?'
    before, after = _service(record, 'before'), _service(record, 'after')
    service_after = _service_text(after)
    if outcome == 'planned':
        service_after = 'unchanged (check mode: a run would disable it during the window and enable it afterwards)'
    elif outcome == 'refused':
        service_after = 'unchanged (refused before any change)'
    servers = [_server_row(server, origin, home) for server in (record.get('servers') or [])]
    plan = [{'name': entry.get('instance') or entry.get('id') or '?', 'state': entry.get('state') or '?',
             'locked': bool(entry.get('locked')), 'move': entry.get('move') or '?',
             'source': (entry.get('from') or '?') + (' → %s' % entry['to'] if entry.get('to') else ''),
             'note': entry.get('note') or ''}
            for entry in (record.get('plan') or [])]
    phases = [{'name': phase.get('name') or '?', 'start': seconds_after(phase.get('started'), origin),
               'end': seconds_after(phase.get('finished'), origin), 'outcome': phase.get('outcome') or '?'}
              for phase in (record.get('phases') or [])]
    totals = record.get('totals') or {}
    facts = []
    if 'fenced' in record:
        facts.append(('Fenced by the operator', str(record.get('fenced'))))
    if totals:
        facts.append(('Moves', '%s moved, %s skipped, %s failed in %s s; %s API requests; at most %s in flight '
                      '(window %s)' % (totals.get('moved', 0), totals.get('skipped', 0), totals.get('failed', 0),
                                       totals.get('seconds', '?'), totals.get('api_requests', '?'),
                                       totals.get('max_in_flight', '?'), totals.get('window', '?'))))
    if plan and outcome in ('planned', 'refused'):
        moving = [entry for entry in plan if entry['move'] not in ('skip', 'fail', 'none')]
        facts.append(('Plan', '%d of %d servers would move (%s)' % (
            len(moving), len(plan), ', '.join('%s %d' % (move, sum(1 for e in moving if e['move'] == move))
                                              for move in sorted(set(e['move'] for e in moving))) or 'none')))
    # a caller's own facts, [label, text] pairs (the rolling roll: batch, room before and after)
    facts.extend((str(label), str(text)) for label, text in record.get('facts') or [])
    if (record.get('ready') or {}).get('check'):
        facts.append(('Back in service', 'checked by %s' % record['ready']['check']))
    if 'power' in record:
        facts.append(('Power state restored afterwards', ', '.join(record.get('power') or []) or 'none needed'))
    if 'restored' in record:
        facts.append(('Restored from snapshots', ', '.join(
            '%s (%s%s%s)' % (r.get('instance'), r.get('action'), ', ' + r['snapshot'] if r.get('snapshot') else '',
                             ', FAILED ' + (r.get('msg') or '') if r.get('failed') else '')
            for r in record.get('restored') or []) or 'none'))
    return {
        'host': record.get('host') or '?',
        'outcome': outcome,
        'failure': record.get('failure') or '',
        'started': origin,
        'finished': record.get('finished'),
        'duration': seconds_after(record.get('finished'), origin),
        'service_before': _service_text(before) or 'not read',
        'service_after': service_after or '?',
        'restored_after_failure': bool((record.get('service') or {}).get('restored_after_failure')),
        'facts': facts,
        'phases': phases,
        'servers': servers,
        'plan': plan,
    }


def report_model(records, title='Report'):
    """The one model both formats are written from."""
    if isinstance(records, dict):
        records = [records]
    return {'title': title, 'sections': [_section(record) for record in records or []]}


# Markdown -----------------------------------------------------------------------------------------

def _cell(value):
    return '-' if value is None or value == '' else str(value).replace('|', '/').replace('\n', ' ')


def _at(value):
    return '-' if value is None else '+%.1f' % value


def report_markdown(records, title='Report'):
    model = report_model(records, title)
    lines = ['# %s' % model['title'], '']
    for section in model['sections']:
        lines += ['## %s: %s' % (section['host'], section['outcome'].upper()), '']
        lines.append('- Window: %s to %s (%s s)' % (section['started'], section['finished'], _at(section['duration'])))
        lines.append('- Service before: %s' % section['service_before'])
        lines.append('- Service after: %s%s' % (section['service_after'], ' (re-enabled after the failure)'
                                                if section['restored_after_failure'] else ''))
        if section['failure']:
            lines.append('- **%s**: %s' % ('Refused' if section['outcome'] == 'refused' else 'Failed',
                                           section['failure']))
        lines += ['- %s: %s' % fact for fact in section['facts']]
        lines.append('')
        if section['phases']:
            lines += ['| phase | start (T+ s) | end (T+ s) | outcome |', '|---|---:|---:|---|']
            lines += ['| %s | %s | %s | %s |' % (_cell(p['name']), _at(p['start']), _at(p['end']), _cell(p['outcome']))
                      for p in section['phases']]
            lines.append('')
        if section['servers']:
            lines += ['| instance | state before → after | move | from → to | started (T+ s) | finished (T+ s) '
                      '| seconds | outcome | back home | note |',
                      '|---|---|---|---|---:|---:|---:|---|---|---|']
            for s in section['servers']:
                lines.append('| %s | %s → %s%s | %s | %s → %s | %s | %s | %s | %s | %s | %s |' % (
                    _cell(s['name']), s['state_before'], s['state_after'], ' (locked)' if s['locked'] else '',
                    _cell(s['move']), s['source'], s['target'], _at(s['start']), _at(s['end']), _cell(s['seconds']),
                    s['outcome'], _cell(s['home']), _cell(s['note'])))
            lines.append('')
        elif section['plan']:
            lines += ['Planned%s:' % (' (check mode)' if section['outcome'] == 'planned' else ''), '',
                      '| instance | state | move | from | note |', '|---|---|---|---|---|']
            lines += ['| %s | %s%s | %s | %s | %s |' % (_cell(p['name']), p['state'], ' (locked)' if p['locked'] else '',
                                                        p['move'], p['source'], _cell(p['note']))
                      for p in section['plan']]
            lines.append('')
        else:
            lines += ['No instances moved.', '']
    return '\n'.join(lines)


# HTML with the SVG timeline -----------------------------------------------------------------------

def _e(value):
    return html.escape('' if value is None else str(value), quote=True)


def in_flight_steps(moves):
    """[(time, moves in flight from then on)] from the moves' start and end times."""
    events = sorted([(move['start'], 1) for move in moves] + [(move['end'], -1) for move in moves],
                    key=lambda event: (event[0], event[1]))
    steps, level = [(0.0, 0)], 0
    for moment, delta in events:
        level += delta
        if steps and steps[-1][0] == moment:
            steps[-1] = (moment, level)
        else:
            steps.append((moment, level))
    return steps


def _tick_step(span):
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / step <= 10:
            return step
    return 7200


def timeline_svg(section):
    """The window as a picture: phases, one bar per instance, moves in flight over time."""
    moves = []
    for server in section['servers']:
        if server['outcome'] in WITHOUT_BAR or server['start'] is None:
            continue
        end = server['end'] if server['end'] is not None else section['duration']
        moves.append(dict(server, start=server['start'], end=max(end or server['start'], server['start'])))
    ends = [p['end'] for p in section['phases'] if p['end'] is not None] + [b['end'] for b in moves]
    span = max([section['duration'] or 0] + ends) or 1.0
    label_width, plot_width, row = 230, 640, 20
    left, right = label_width + 10, label_width + 10 + plot_width

    def x(moment):
        return left + plot_width * max(0.0, min(moment, span)) / span

    height = 30 + row + 8 + row * max(len(moves), 1) + 20 + 70 + 30
    out = ['<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" font-size="11" role="img" aria-label="timeline of %s">'
           % (right + 20, height, right + 20, height, _e(section['host']))]
    # time axis
    step = _tick_step(span)
    top = 20
    tick = 0
    while tick <= span + 1e-9:
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x(tick), top, x(tick), height - 25))
        out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">+%ss</text>' % (x(tick), height - 12, tick))
        tick += step
    # phases
    y = top
    out.append('<text x="%d" y="%d" fill="#333">phases</text>' % (8, y + 14))
    for index, phase in enumerate(section['phases']):
        if phase['start'] is None:
            continue
        end = phase['end'] if phase['end'] is not None else span
        out.append('<rect class="phase" data-phase="%s" x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" '
                   'stroke="#888"><title>%s: +%.1f to +%.1f s (%s)</title></rect>'
                   % (_e(phase['name']), x(phase['start']), y, max(x(end) - x(phase['start']), 1.0), row - 4,
                      PHASE_COLOURS[index % len(PHASE_COLOURS)], _e(phase['name']), phase['start'], end,
                      _e(phase['outcome'])))
        out.append('<text x="%.1f" y="%d" fill="#333">%s</text>' % (x(phase['start']) + 3, y + 12, _e(phase['name'])))
    # one bar per instance
    y += row + 8
    colours = dict((kind, colour) for kind, colour, _label in KIND_COLOURS)
    for move in moves:
        lock_mark = ' (locked)' if move['locked'] else ''
        out.append('<text x="8" y="%d" fill="#222">%s%s</text>' % (y + 12, _e(move['name'][:34]), lock_mark))
        out.append('<rect class="bar bar-%s" data-instance="%s" data-id="%s" data-kind="%s" data-outcome="%s" '
                   'data-start="%.1f" data-end="%.1f" x="%.1f" y="%d" width="%.1f" height="%d" rx="2" fill="%s">'
                   '<title>%s: %s, %s -> %s, +%.1f to +%.1f s, %s%s</title></rect>'
                   % (move['kind'], _e(move['name']), _e(move['id']), move['kind'], _e(move['outcome']), move['start'],
                      move['end'], x(move['start']), y + 2, max(x(move['end']) - x(move['start']), 2.0), row - 6,
                      colours.get(move['kind'], '#7f8c8d'), _e(move['name']), _e(move['move']), _e(move['source']),
                      _e(move['target']), move['start'], move['end'], _e(move['outcome']),
                      (' - ' + _e(move['note'])) if move['note'] else ''))
        y += row
    if not moves:
        out.append('<text x="%d" y="%d" fill="#777">no moves</text>' % (left, y + 12))
        y += row
    # moves in flight over time
    y += 20
    chart = 60
    steps = in_flight_steps(moves)
    peak = max([level for _moment, level in steps] + [1])
    out.append('<text x="8" y="%d" fill="#333">moves in flight (max %d)</text>'
               % (y + chart // 2, max(level for _m, level in steps)))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>' % (left, y + chart, right, y + chart))
    points, level_before = [], 0
    for moment, level in steps:
        points.append('%.1f,%.1f' % (x(moment), y + chart - chart * level_before / peak))
        points.append('%.1f,%.1f' % (x(moment), y + chart - chart * level / peak))
        level_before = level
    points.append('%.1f,%.1f' % (x(span), y + chart - chart * level_before / peak))
    out.append('<polyline class="in-flight" data-peak="%d" points="%s" fill="none" stroke="#2c3e50" '
               'stroke-width="1.5"/>' % (max(level for _m, level in steps), ' '.join(points)))
    out.append('</svg>')
    return '\n'.join(out)


STYLE = ('body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.6em 0}'
         'td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px}th{background:#f2f2f2}'
         '.failed,.refused{color:#b00}.moved,.completed{color:#070}.legend span{display:inline-block;'
         'width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}')


def report_html(records, title='Report'):
    model = report_model(records, title)
    out = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8"><title>%s</title><style>%s</style></head><body>'
           % (_e(model['title']), STYLE), '<h1>%s</h1>' % _e(model['title'])]
    for section in model['sections']:
        host, outcome = _e(section['host']), _e(section['outcome'])
        out.append('<section class="window" data-host="%s" data-outcome="%s">' % (host, outcome))
        out.append('<h2>%s: <span class="%s">%s</span></h2>' % (host, outcome, outcome.upper()))
        items = [('Window', '%s to %s (%s s)' % (section['started'], section['finished'], _at(section['duration']))),
                 ('Service before', section['service_before']),
                 ('Service after', section['service_after'] + (' (re-enabled after the failure)'
                                                               if section['restored_after_failure'] else ''))]
        if section['failure']:
            items.append(('Refused' if section['outcome'] == 'refused' else 'Failed', section['failure']))
        items += section['facts']
        out.append('<ul>%s</ul>' % ''.join('<li><b>%s</b>: %s</li>' % (_e(k), _e(v)) for k, v in items))
        if section['servers'] or section['phases']:
            out.append('<div class="legend">%s</div>' % ''.join(
                '<span style="background:%s"></span>%s' % (colour, _e(label)) for _k, colour, label in KIND_COLOURS))
            out.append(timeline_svg(section))
        if section['phases']:
            out.append('<table class="phases"><tr><th>phase</th><th>start (T+ s)</th><th>end (T+ s)</th>'
                       '<th>outcome</th></tr>%s</table>' % ''.join(
                           '<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>'
                           % (_e(p['name']), _at(p['start']), _at(p['end']), _e(p['outcome']))
                           for p in section['phases']))
        if section['servers']:
            out.append('<table class="servers"><tr><th>instance</th><th>state before → after</th><th>move</th>'
                       '<th>from → to</th><th>started (T+ s)</th><th>finished (T+ s)</th><th>seconds</th>'
                       '<th>outcome</th><th>back home</th><th>note</th></tr>%s</table>' % ''.join(
                           '<tr data-instance="%s"><td>%s</td><td>%s → %s%s</td><td>%s</td><td>%s → %s</td><td>%s</td>'
                           '<td>%s</td><td>%s</td><td class="%s">%s</td><td>%s</td><td>%s</td></tr>'
                           % (_e(s['name']), _e(s['name']), _e(s['state_before']), _e(s['state_after']),
                              ' (locked)' if s['locked'] else '', _e(s['move']), _e(s['source']), _e(s['target']),
                              _at(s['start']), _at(s['end']), _e(_cell(s['seconds'])), _e(s['outcome']),
                              _e(s['outcome']), _e(s['home']), _e(s['note']))
                           for s in section['servers']))
        elif section['plan']:
            out.append('<p>Planned%s:</p>' % (' (check mode)' if section['outcome'] == 'planned' else ''))
            out.append('<table class="plan"><tr><th>instance</th><th>state</th><th>move</th><th>from</th>'
                       '<th>note</th></tr>%s</table>' % ''.join(
                           '<tr data-instance="%s"><td>%s</td><td>%s%s</td><td>%s</td><td>%s</td><td>%s</td></tr>'
                           % (_e(p['name']), _e(p['name']), _e(p['state']), ' (locked)' if p['locked'] else '',
                              _e(p['move']), _e(p['source']), _e(p['note'])) for p in section['plan']))
        else:
            out.append('<p>No instances moved.</p>')
        out.append('</section>')
    out.append('</body></html>')
    return '\n'.join(out)


# Survey input -------------------------------------------------------------------------------------

def as_list(value):
    """A list as given, or a survey's comma-separated (or newline-separated) text as a list of its
    non-empty, trimmed items. Nothing (None, '') is an empty list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value)
    return [item.strip() for item in text.replace('\n', ',').split(',') if item.strip()]


# The record of a roll, per host and per instance (set_stats) ---------------------------------------

def roll_summary(records):
    """{hosts: {host: {batch, outcome, moved, failed, service_after}}, instances: {name: {id, from, to, move,
    state_before, state_after, outcome}}} from a roll's host records (the report's records)."""
    hosts, instances = {}, {}
    for record in records or []:
        totals = record.get('totals') or {}
        hosts[record.get('host')] = {
            'batch': record.get('batch'), 'outcome': record.get('outcome'),
            'moved': totals.get('moved', 0), 'failed': totals.get('failed', 0),
            'service_after': _service(record, 'after').get('status')}
        for server in record.get('servers') or []:
            instances[server.get('name') or server.get('id')] = dict(
                (key, server.get(key)) for key in ('id', 'from', 'to', 'move', 'state_before', 'state_after', 'outcome'))
    return {'hosts': hosts, 'instances': instances}


class FilterModule(object):

    def filters(self):
        return {
            'report_model': report_model,
            'report_markdown': report_markdown,
            'report_html': report_html,
            'as_list': as_list,
            'roll_summary': roll_summary,
        }
