#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""uqcow bad-input suite: hostile images must be refused cleanly.

Usage: test_badinput.py UQCOW [--workdir DIR] [--keep] [-k SUBSTRING]...
                              [-j JOBS] [-v]

Crafts the cases with craft.py (next to this file), then for every case
runs, each with a 10 s timeout:
    uqcow info FILE
    uqcow map --output=json FILE
    uqcow convert -O raw FILE OUT
    uqcow info --backing-chain FILE        (backing-chain cases)
    uqcow io -c 'write ...' FILE           (cases that expect a writable
                                            open to refuse)
and checks the outcome the case expects (see craft.py):
    ok      exit 0 (map prints valid JSON; convert output matches
            qemu-img's where the case records a checksum)
    fail    exit 1 and exactly one non-empty line on stderr
    refuse  fail, and that line names the image (path or basename) and
            contains one of the case's keywords (case-insensitive; the
            file names are removed from the line before matching)
For every case and command: no timeout, no death by signal, no
'AddressSanitizer', 'LeakSanitizer' or 'runtime error:' in the output;
afterwards every file of the case is byte-identical (sha256).
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import craft  # noqa: E402

TIMEOUT = 10
SANITIZER_MARKS = ('AddressSanitizer', 'LeakSanitizer', 'runtime error:',
                   'ThreadSanitizer', 'MemorySanitizer')
ORDER = ('info', 'chain', 'map', 'convert', 'write')


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for blk in iter(lambda: f.read(1 << 20), b''):
            h.update(blk)
    return h.hexdigest()


def command(uqcow, which, path, out):
    if which == 'info':
        return [uqcow, 'info', path]
    if which == 'chain':
        return [uqcow, 'info', '--backing-chain', path]
    if which == 'map':
        return [uqcow, 'map', '--output=json', path]
    if which == 'convert':
        return [uqcow, 'convert', '-O', 'raw', path, out]
    if which == 'write':
        return [uqcow, 'io', '-c', 'write -P 7 0 512', path]
    raise ValueError(which)


def shell_quote(args):
    out = []
    for a in args:
        if a and all(ch.isalnum() or ch in '-_./=:+,@%' for ch in a):
            out.append(a)
        else:
            out.append("'" + a.replace("'", "'\\''") + "'")
    return ' '.join(out)


def stderr_line(err):
    """The single non-empty stderr line, or None."""
    text = err[:-1] if err.endswith('\n') else err
    if not text.strip() or '\n' in text or '\r' in text:
        return None
    return text


def classify(case, which, res, path, workdir):
    """Return (outcome set it satisfies, reasons it failed the others)."""
    rc, out, err, outfile = res
    got = set()
    why = []
    if rc == 0:
        ok = True
        if which == 'map':
            try:
                json.loads(out)
            except ValueError as e:
                ok = False
                why.append('map output is not JSON (%s)' % e)
        if which == 'convert' and case.get('raw_sha256'):
            if not os.path.exists(outfile):
                ok = False
                why.append('convert wrote no output file')
            elif sha256(outfile) != case['raw_sha256']:
                ok = False
                why.append('converted data differs from qemu-img convert')
        if ok:
            got.add('ok')
        return got, why
    if rc != 1:
        why.append('exit status %d, expected 1' % rc)
        return got, why
    line = stderr_line(err)
    if line is None:
        n = len([x for x in err.splitlines() if x.strip()])
        why.append('stderr must be exactly one non-empty line (got %d '
                   'non-empty lines, %d bytes)' % (n, len(err)))
        return got, why
    full = os.path.join(workdir, case['file'])
    names = [full, case['file']] + case['names']
    low = line.lower()
    # a single-image case names its image once; twice means a message
    # prefixed twice or spliced into itself
    base = os.path.basename(case['file']).lower()
    # (a file that names itself as its backing file is named as both ends)
    if (len(case['files']) == 1 and low.count(base) > 1 and
            not case['name'].startswith('chain_self')):
        why.append('garbled message: %s appears %d times' %
                   (base, low.count(base)))
        return got, why
    got.add('fail')
    # refuse: names the file and the field
    if not any(n.lower() in low for n in names if n):
        shown = [n if len(n) <= 40 else n[:37] + '...'
                 for n in case['names'][:3]]
        if len(case['names']) > 3:
            shown.append('...')
        why.append('message does not name the file (%s)' %
                   ' or '.join(shown))
        return got, why
    stripped = low
    for n in sorted(set(names), key=len, reverse=True):
        if n:
            stripped = stripped.replace(n.lower(), ' ')
    # also the directories of the work tree (their names are arbitrary)
    stripped = stripped.replace(workdir.lower(), ' ')
    kws = case['keywords']
    if kws and not any(k.lower() in stripped for k in kws):
        why.append('message names none of: %s' % ', '.join(kws))
        return got, why
    got.add('refuse')
    return got, why


def run_case(case, uqcow, workdir, scratch):
    """Run every command of a case; return a list of failure reports."""
    failures = []
    path = os.path.join(workdir, case['file'])
    before = {f: sha256(os.path.join(workdir, f)) for f in case['files']}
    outdir = tempfile.mkdtemp(prefix=case['name'][:40] + '.', dir=scratch)
    try:
        for which in ORDER:
            if which not in case['expect']:
                continue
            allowed = set(case['expect'][which])
            outfile = os.path.join(outdir, 'out.raw')
            cmd = command(uqcow, which, path, outfile)
            report = None
            try:
                p = subprocess.run(cmd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL,
                                   timeout=TIMEOUT, cwd=outdir)
                out = p.stdout.decode('utf-8', 'replace')
                err = p.stderr.decode('utf-8', 'replace')
                rc = p.returncode
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b'').decode('utf-8', 'replace')
                err = (e.stderr or b'').decode('utf-8', 'replace')
                report = 'timed out after %d s (hang)' % TIMEOUT
                rc = None
            if report is None:
                marks = [m for m in SANITIZER_MARKS if m in out or m in err]
                if marks:
                    report = 'sanitizer report (%s)' % ', '.join(marks)
                elif rc < 0:
                    report = 'killed by signal %d' % -rc
                else:
                    got, why = classify(case, which, (rc, out, err, outfile),
                                        path, workdir)
                    if not (got & allowed):
                        report = 'expected %s; %s' % (
                            '|'.join(sorted(allowed)),
                            '; '.join(why) if why else
                            'got %s (exit %d)' % (
                                '|'.join(sorted(got)) or '?', rc))
            if report:
                failures.append({
                    'case': case['name'], 'cmd': shell_quote(cmd),
                    'why': report, 'rc': rc,
                    'stderr': err[-2000:], 'stdout': out[-500:],
                    'note': case.get('note', ''),
                })
            if os.path.exists(outfile):
                os.unlink(outfile)
        for f, h in before.items():
            p = os.path.join(workdir, f)
            if not os.path.exists(p):
                failures.append({'case': case['name'], 'cmd': '-',
                                 'why': '%s was deleted' % f, 'rc': None,
                                 'stderr': '', 'stdout': '', 'note': ''})
            elif sha256(p) != h:
                failures.append({'case': case['name'], 'cmd': '-',
                                 'why': '%s was modified' % f, 'rc': None,
                                 'stderr': '', 'stdout': '', 'note': ''})
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    return failures


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('uqcow', help='path of the uqcow executable')
    ap.add_argument('--workdir', help='craft the images here (default: a '
                    'temporary directory, removed unless --keep)')
    ap.add_argument('--keep', action='store_true',
                    help='keep the work directory')
    ap.add_argument('-k', dest='filters', action='append', default=[],
                    help='only cases whose name contains this (repeatable)')
    ap.add_argument('-j', dest='jobs', type=int,
                    default=max(2, os.cpu_count() or 2),
                    help='cases run in parallel')
    ap.add_argument('-v', dest='verbose', action='store_true',
                    help='print every case')
    args = ap.parse_args(argv[1:])

    uqcow = os.path.abspath(args.uqcow)
    if not os.access(uqcow, os.X_OK):
        print('badinput: %s is not executable' % uqcow, file=sys.stderr)
        return 2
    for tool in ('qemu-img', 'qemu-io'):
        if shutil.which(tool) is None:
            print('badinput: %s not found, skipping' % tool)
            return 77
    # Sanitizer defaults unless the caller set them: report, don't hide
    os.environ.setdefault('ASAN_OPTIONS', 'detect_leaks=1')
    os.environ.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1')

    workdir = args.workdir or tempfile.mkdtemp(prefix='uqcow-badinput.')
    workdir = os.path.abspath(workdir)
    try:
        cases = craft.generate(workdir)
        if args.filters:
            cases = [c for c in cases
                     if any(f in c['name'] for f in args.filters)]
        scratch = tempfile.mkdtemp(prefix='out.', dir=workdir)
        failures = {}
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
            futs = {ex.submit(run_case, c, uqcow, workdir, scratch): c
                    for c in cases}
            for fut in concurrent.futures.as_completed(futs):
                c = futs[fut]
                try:
                    res = fut.result()
                except Exception as e:  # a bug here, not in uqcow
                    res = [{'case': c['name'], 'cmd': '-',
                            'why': 'harness error: %r' % e, 'rc': None,
                            'stderr': '', 'stdout': '', 'note': ''}]
                if res:
                    failures[c['name']] = res
                if args.verbose:
                    print('%-4s %s' % ('FAIL' if res else 'ok', c['name']))
        nfail = len(failures)
        for c in cases:
            if c['name'] not in failures:
                continue
            print('FAIL %s  (%s)' % (c['name'], c['file']))
            if c.get('note'):
                print('     note: %s' % c['note'])
            for f in failures[c['name']]:
                print('     $ %s' % f['cmd'])
                print('     -> %s' % f['why'])
                if f['stderr']:
                    for ln in f['stderr'].rstrip('\n').split('\n')[:12]:
                        print('     stderr: %s' % ln)
        print('badinput: %d passed, %d failed' % (len(cases) - nfail, nfail))
        return 1 if nfail else 0
    finally:
        if args.keep or args.workdir:
            print('badinput: images kept in %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
