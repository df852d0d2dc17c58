# -*- coding: utf-8 -*-
"""The report filters: one model, two formats, the SVG timeline drawn from the servers' records."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from xml.etree import ElementTree

from ansible_collections.vmops.lifecycle.plugins.filter.report import (
    FilterModule, as_list, in_flight_steps, move_kind, report_html, report_markdown, report_model)

T0 = '2026-12-03T11:00:00.000000Z'


def server(name, move, outcome, started, finished, attempts=None, locked=False, message=None):
    return {'name': name, 'id': 'id-' + name, 'from': 'fake1', 'to': 'fake3' if outcome != 'failed' else None,
            'move': move, 'attempts': attempts or [move], 'state_before': 'running', 'state_after': 'running',
            'locked': locked, 'started': started, 'finished': finished, 'seconds': 1.0, 'outcome': outcome,
            'message': message}


def window():
    return {
        'host': 'fake1', 'outcome': 'failed', 'failure': 'Check that the drain succeeded: 1 server failed',
        'started': T0, 'finished': '2026-12-03T11:00:40.000000Z',
        'service': {'before': {'status': 'enabled', 'state': 'up'},
                    'after': {'status': 'enabled', 'state': 'up'}, 'restored_after_failure': True},
        'phases': [{'name': 'drain', 'started': '2026-12-03T11:00:02.000000Z',
                    'finished': '2026-12-03T11:00:20.000000Z', 'outcome': 'failed'}],
        'servers': [
            server('web', 'live', 'moved', '2026-12-03T11:00:03.000Z', '2026-12-03T11:00:08.000Z', locked=True),
            server('batch', 'cold', 'moved', '2026-12-03T11:00:04.000Z', '2026-12-03T11:00:09.500Z'),
            server('db', 'cold', 'moved', '2026-12-03T11:00:05.000Z', '2026-12-03T11:00:15.000Z',
                   attempts=['live', 'cold'], message='live migration aborted at its deadline'),
            server('bad', 'live', 'failed', '2026-12-03T11:00:10.000Z', '2026-12-03T11:00:12.000Z',
                   message='No valid host was found'),
            server('shelf', 'skip', 'skipped', None, None),
        ],
        'totals': {'moved': 3, 'skipped': 1, 'failed': 1, 'seconds': 17.2, 'api_requests': 50,
                   'max_in_flight': 3, 'window': 3},
        'home': [], 'plan': [],
    }


def svg_of(page):
    return ElementTree.fromstring(re.search(r'<svg.*?</svg>', page, re.S).group(0))


def test_move_kinds_name_fallback_and_failure():
    assert move_kind({'move': 'live', 'outcome': 'moved', 'attempts': ['live']}) == 'live'
    assert move_kind({'move': 'cold', 'outcome': 'moved', 'attempts': ['live', 'cold']}) == 'fallback'
    assert move_kind({'move': 'live', 'outcome': 'failed'}) == 'failed'
    assert move_kind({'move': 'evacuate', 'outcome': 'moved'}) == 'evacuate'


def test_both_formats_come_from_one_model():
    model = report_model(window(), 'Maintenance window report')
    section = model['sections'][0]
    assert [s['kind'] for s in section['servers']] == ['live', 'cold', 'fallback', 'failed', 'other']
    assert section['servers'][0]['start'] == 3.0 and section['servers'][2]['end'] == 15.0
    markdown = report_markdown(window(), 'Maintenance window report')
    page = report_html(window(), 'Maintenance window report')
    for text in ('FAILED', 'enabled, up', 're-enabled after the failure', 'live -> cold', '(locked)',
                 'No valid host was found', '3 moved, 1 skipped, 1 failed in 17.2 s', 'drain'):
        assert text in markdown
        assert text.replace('->', '-&gt;') in page


def test_svg_has_a_bar_per_move_coloured_by_kind_and_the_peak_in_flight():
    svg = svg_of(report_html([window()]))
    bars = [r for r in svg.iter('{http://www.w3.org/2000/svg}rect') if 'bar' in r.get('class', '').split()]
    assert [(b.get('data-instance'), b.get('data-kind')) for b in bars] == [
        ('web', 'live'), ('batch', 'cold'), ('db', 'fallback'), ('bad', 'failed')]
    assert [float(b.get('data-start')) for b in bars] == [3.0, 4.0, 5.0, 10.0]
    assert len(set(b.get('fill') for b in bars)) == 4
    widths = [float(b.get('width')) for b in bars]
    assert widths[2] > widths[1] > widths[3]           # 10 s > 5.5 s > 2 s
    assert svg.find('{http://www.w3.org/2000/svg}polyline').get('data-peak') == '3'
    phases = [r for r in svg.iter('{http://www.w3.org/2000/svg}rect') if r.get('class') == 'phase']
    assert [p.get('data-phase') for p in phases] == ['drain']


def test_in_flight_counts_overlaps():
    bars = [{'start': 0.0, 'end': 4.0}, {'start': 1.0, 'end': 2.0}, {'start': 2.0, 'end': 3.0}]
    assert in_flight_steps(bars) == [(0.0, 1), (1.0, 2), (2.0, 2), (3.0, 1), (4.0, 0)]


def test_check_mode_shows_the_plan_not_question_marks():
    record = {'host': 'fake1', 'outcome': 'planned', 'failure': '', 'started': T0, 'finished': T0,
              'service': {'before': {'status': 'enabled', 'state': 'up'}, 'after': {}},
              'plan': [{'instance': 'web', 'state': 'running', 'move': 'live', 'from': 'fake1', 'locked': True},
                       {'instance': 'shelf', 'state': 'shelved', 'move': 'skip', 'from': 'fake1'}],
              'servers': [], 'phases': []}
    for text in (report_markdown(record), report_html(record)):
        assert '?, ?' not in text and 'Service after: ?' not in text
        assert 'PLANNED' in text and 'check mode' in text and 'web' in text and 'shelf' in text
        assert '1 of 2 servers would move (live 1)' in text


def test_a_refused_preflight_reports_its_reason():
    record = {'host': 'fake1', 'outcome': 'refused', 'failure': 'a rescued server with rescued_policy fail',
              'started': T0, 'finished': T0, 'service': {'before': {}, 'after': {}}, 'plan': [], 'servers': []}
    markdown = report_markdown(record)
    assert '**Refused**: a rescued server with rescued_policy fail' in markdown
    assert 'Refused' in report_html(record)


def test_names_are_escaped_in_html():
    record = window()
    record['servers'][0]['name'] = '<script>x</script>'
    page = report_html(record)
    assert '<script>' not in page
    svg_of(page)            # still well-formed XML


def test_disaster_recovery_records_keep_their_extras():
    record = {'host': 'fake2', 'outcome': 'completed', 'failure': '', 'started': T0,
              'finished': '2026-12-03T11:00:10.000000Z', 'fenced': True,
              'service_before': {'status': 'enabled', 'state': 'down'},
              'service_after': {'status': 'disabled', 'state': 'down', 'forced_down': True},
              'servers': [server('db', 'evacuate', 'moved', '2026-12-03T11:00:01.000Z', '2026-12-03T11:00:05.000Z')],
              'totals': {'moved': 1, 'failed': 0, 'skipped': 0, 'seconds': 4}, 'power': ['db'],
              'restored': [{'instance': 'q', 'action': 'relaunched', 'snapshot': 'daily-1', 'failed': False}]}
    markdown = report_markdown(record, 'Disaster recovery report')
    assert 'disabled, down, forced down' in markdown and 'Power state restored afterwards: db' in markdown
    assert 'q (relaunched, daily-1)' in markdown
    assert svg_of(report_html(record)).find('.//{http://www.w3.org/2000/svg}rect[@data-kind="evacuate"]') is not None


def test_as_list_takes_survey_text():
    assert as_list('web1, db1,,') == ['web1', 'db1']
    assert as_list('web1\ndb1') == ['web1', 'db1']
    assert as_list(['a', 'b']) == ['a', 'b']
    assert as_list('') == [] and as_list(None) == []
    assert set(FilterModule().filters()) == {'report_model', 'report_markdown', 'report_html', 'as_list', 'roll_summary'}


def test_a_planned_destination_and_the_callers_facts_are_shown():
    record = {'host': 'fake2', 'outcome': 'planned', 'started': T0, 'finished': T0,
              'plan': [{'instance': 'web', 'state': 'running', 'move': 'live', 'from': 'fake2', 'to': 'fake1'},
                       {'instance': 'old', 'state': 'error', 'move': 'skip', 'from': 'fake2'}],
              'facts': [['Batch', '2 of 3 (fake2, fake4)'], ['Room before', 'nova: 8 vCPU']]}
    markdown = report_markdown([record], 'Rolling maintenance')
    assert '| web | running | live | fake2 → fake1 |' in markdown
    assert '| old | error | skip | fake2 |' in markdown
    assert '- Batch: 2 of 3 (fake2, fake4)' in markdown and '- Room before: nova: 8 vCPU' in markdown
    html = report_html([record], 'Rolling maintenance')
    assert '<td>fake2 → fake1</td>' in html and '<li><b>Batch</b>: 2 of 3 (fake2, fake4)</li>' in html


def test_roll_summary_per_host_and_per_instance():
    from ansible_collections.vmops.lifecycle.plugins.filter.report import roll_summary
    done = dict(window(), host='fake2', batch=1, outcome='completed', totals={'moved': 3, 'failed': 0})
    planned = {'host': 'fake4', 'batch': 2, 'outcome': 'not started', 'plan': [{'instance': 'x'}]}
    summary = roll_summary([done, planned])
    assert summary['hosts'] == {
        'fake2': {'batch': 1, 'outcome': 'completed', 'moved': 3, 'failed': 0, 'service_after': 'enabled'},
        'fake4': {'batch': 2, 'outcome': 'not started', 'moved': 0, 'failed': 0, 'service_after': None}}
    assert summary['instances']['web'] == {'id': 'id-web', 'from': 'fake1', 'to': 'fake3', 'move': 'live',
                                           'state_before': 'running', 'state_after': 'running', 'outcome': 'moved'}
    assert set(summary['instances']) == set(['web', 'batch', 'db', 'bad', 'shelf'])
    assert 'roll_summary' in FilterModule().filters()
