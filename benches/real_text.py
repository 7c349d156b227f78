#!/usr/bin/env python3
"""Gathers this machine's real text for the benches' same-output checks: Python's
standard library, man pages (gunzipped) and /usr/share/doc, one file of each in turn,
in sorted order, until LIMIT bytes; files that look binary (a NUL in the first 8 KiB)
are left out.

    real_text.py OUT LIMIT              one file OUT, the files' bytes as they are
    real_text.py OUT LIMIT --pieces KIB a folder OUT of rNNN.txt files of about KIB KiB,
                                        cut at line ends, UTF-8 files only
"""
import glob
import gzip
import os
import sys


def sources():
    """The three lists of paths, each sorted."""
    py = sorted(p for d in glob.glob('/usr/lib/python3*/')
                for p in glob.glob(d + '**/*.py', recursive=True))
    man = sorted(glob.glob('/usr/share/man/**/*.gz', recursive=True))
    doc = sorted(p for p in glob.glob('/usr/share/doc/**', recursive=True) if os.path.isfile(p))
    return [py, man, doc]


def texts(limit, utf8):
    """Each file's content in turn (bytes, or str when `utf8`), until `limit` bytes."""
    lists, n = [iter(s) for s in sources()], 0
    while n < limit and lists:
        for it in list(lists):
            p = next(it, None)
            if p is None:
                lists.remove(it)
                continue
            try:
                b = open(p, 'rb').read()
                if p.endswith('.gz'):
                    b = gzip.decompress(b)
                t = b.decode('utf-8') if utf8 else b
            except Exception:
                continue
            if (t[:8192].find('\0' if utf8 else b'\0')) >= 0:
                continue
            n += len(b)
            yield t


def write_whole(out, limit):
    with open(out, 'wb') as f:
        for b in texts(limit, utf8=False):
            f.write(b if b.endswith(b'\n') else b + b'\n')


def write_pieces(out, limit, piece):
    os.makedirs(out, exist_ok=True)
    k, buf, size = 0, [], 0
    for t in texts(limit, utf8=True):
        for line in t.splitlines(keepends=True):
            buf.append(line)
            size += len(line.encode())
            if size >= piece:
                open(os.path.join(out, f'r{k:03}.txt'), 'w', encoding='utf-8').write(''.join(buf))
                k, buf, size = k + 1, [], 0
    if buf:
        open(os.path.join(out, f'r{k:03}.txt'), 'w', encoding='utf-8').write(''.join(buf))


def main():
    args = sys.argv[1:]
    if len(args) == 4 and args[2] == '--pieces':
        write_pieces(args[0], int(args[1]), int(args[3]) * 1024)
    elif len(args) == 2:
        write_whole(args[0], int(args[1]))
    else:
        sys.exit(__doc__)


main()
