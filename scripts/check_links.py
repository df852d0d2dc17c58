#!/usr/bin/env python3
"""Checks that every relative link in the repository's Markdown files points at a file that exists,
and every #anchor at a heading of that file (anchors made the way GitHub makes them).

Usage: scripts/check_links.py   (from anywhere; exits 1 and lists the broken links)
"""

import glob
import os
import re
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
PAGES = ('*.md', 'docs/**/*.md', 'roles/*/README.md', 'sandbox/*/README.md', 'tests/**/README.md')
LINK = re.compile(r'\]\(([^)\s]+)\)')
FENCE = re.compile(r'^(```|~~~).*?^\1', re.M | re.S)


def anchors(path):
    """The anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to '-'."""
    found = set()
    text = FENCE.sub('', open(path, encoding='utf-8').read())
    for heading in re.findall(r'^#+\s+(.*?)\s*$', text, re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
        while slug in found:
            slug += '-1'
        found.add(slug)
    return found


def broken_links():
    pages = sorted({page for pattern in PAGES for page in glob.glob(os.path.join(REPO, pattern), recursive=True)
                    if '/.venv' not in page and '/.build/' not in page and '/tests/output/' not in page})
    for page in pages:
        text = FENCE.sub('', open(page, encoding='utf-8').read())
        for target in LINK.findall(text):
            if re.match(r'[a-z]+:', target):
                continue
            path, _, anchor = target.partition('#')
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(resolved):
                yield os.path.relpath(page, REPO), target, 'no such file'
            elif anchor and resolved.endswith('.md') and anchor not in anchors(resolved):
                yield os.path.relpath(page, REPO), target, 'no such heading'


def main():
    broken = list(broken_links())
    for page, target, why in broken:
        print('%s: %s (%s)' % (page, target, why))
    return 1 if broken else 0


if __name__ == '__main__':
    sys.exit(main())
