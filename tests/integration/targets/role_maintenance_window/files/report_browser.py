"""Render a role's HTML report in a real browser (Debian's headless Chromium) and say what the page holds.

  report_browser.py REPORT.html SCREENSHOT.png
     -> JSON: {"png": {"bytes", "width", "height"}, "sections": [{"host", "outcome"}],
               "bars": [{"instance", "kind", "outcome", "start", "end", "width"}], "peaks": [...]}

The page is loaded by Chromium twice: once to a PNG screenshot, once with --dump-dom, so what is read
back is the DOM the browser built, not the file's text. Fails when Chromium is missing or the page
does not load.
"""

import json
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser

BROWSER_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--window-size=1280,1600']


class PageReader(HTMLParser):
    def __init__(self):
        super().__init__()
        self.bars, self.sections, self.peaks = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get('class') or '').split()
        if tag == 'rect' and 'bar' in classes:
            self.bars.append({'instance': attrs.get('data-instance'), 'id': attrs.get('data-id'),
                              'kind': attrs.get('data-kind'), 'outcome': attrs.get('data-outcome'),
                              'start': float(attrs['data-start']), 'end': float(attrs['data-end']),
                              'width': float(attrs['width'])})
        elif tag == 'section' and 'window' in classes:
            self.sections.append({'host': attrs.get('data-host'), 'outcome': attrs.get('data-outcome')})
        elif tag == 'polyline' and 'in-flight' in classes:
            self.peaks.append(int(attrs['data-peak']))


def main():
    report, screenshot = sys.argv[1], sys.argv[2]
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    if not browser:
        sys.exit('Chromium is not installed (Debian package chromium; scripts/bootstrap installs it)')
    url = 'file://' + report
    subprocess.run([browser] + BROWSER_FLAGS + ['--screenshot=' + screenshot, url], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    dom = subprocess.run([browser] + BROWSER_FLAGS + ['--dump-dom', url], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    reader = PageReader()
    reader.feed(dom)
    with open(screenshot, 'rb') as stream:
        head = stream.read(24)
        size = len(head) + len(stream.read())
    if head[:8] != b'\x89PNG\r\n\x1a\n':
        sys.exit('%s is not a PNG' % screenshot)
    width, height = struct.unpack('>II', head[16:24])
    print(json.dumps({'png': {'bytes': size, 'width': width, 'height': height}, 'sections': reader.sections,
                      'bars': reader.bars, 'peaks': reader.peaks}))


if __name__ == '__main__':
    main()
