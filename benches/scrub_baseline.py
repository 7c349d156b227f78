#!/usr/bin/env python3
"""The comparison side of `cargo xtask bench scrub`: hb's scrubber families written the
way a careful Python program would, with the standard library's `re` only.

Families: the same regexes as hb-agent/src/scrub/families.rs, one compiled pattern per
family run with `finditer` (the faster of the obvious designs: `re` jumps between
literal prefixes quickly, while one alternation of all families tries every branch at
almost every position, about 30 times slower here), the same left-boundary, entropy and
character-mix checks, overlapping spans merged, the same capture group redacted.

Live values (--secrets-file): every value in the same encodings as hb (raw, base64
standard/URL-safe padded and not plus the stable cores at 3 offsets, percent-encoding,
hex, JSON escaping), removed with one `bytes.replace` per form, longest first. That loop
is the faster of the two obvious choices: one alternation regex of ~15,000 escaped
literals makes `re` try them one after another at almost every position.

Prints one JSON object: MiB/s from the median CPU time of the calling thread (and wall
time), and how many redactions the last run made.
"""

import argparse
import base64
import json
import math
import re
import statistics
import time

# (name, regex, group to redact, left boundary, check)
RULES = [
    ('pem_private_key', b'-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\\s:,\\\\]|-[A-Za-z])*(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?', 0, False, None),
    ('jwt', b'eyJ[A-Za-z0-9_-]{10,}={0,2}\\.[A-Za-z0-9_-]{10,}={0,2}\\.[A-Za-z0-9_-]*={0,2}', 0, False, None),
    ('github_pat', b'ghp_[A-Za-z0-9]{36,}', 0, False, None),
    ('github_oauth', b'gho_[A-Za-z0-9]{36,}', 0, False, None),
    ('github_user_token', b'ghu_[A-Za-z0-9]{36,}', 0, False, None),
    ('github_app_token', b'ghs_[A-Za-z0-9]{36,}', 0, False, None),
    ('github_refresh_token', b'ghr_[A-Za-z0-9]{36,}', 0, False, None),
    ('github_fine_grained_pat', b'github_pat_[A-Za-z0-9_]{40,}', 0, False, None),
    ('gitlab_pat', b'glpat-[A-Za-z0-9_-]{20,}', 0, False, None),
    ('google_oauth_token', b'ya29\\.[A-Za-z0-9_-]{20,}', 0, False, None),
    ('google_api_key', b'AIza[0-9A-Za-z_-]{35}', 0, False, None),
    ('slack_token', b'xox[abposr]-[A-Za-z0-9-]{10,}', 0, False, None),
    ('slack_app_token', b'xapp-[0-9]+-[A-Za-z0-9-]{10,}', 0, False, None),
    ('slack_webhook', b'hooks\\.slack\\.com/((?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,})', 1, False, None),
    ('aws_access_key_id', b'(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}', 0, False, None),
    ('anthropic_api_key', b'sk-ant-[A-Za-z0-9_-]{20,}', 0, True, ('mixed', 7, 3.0, True)),
    ('openai_api_key', b'sk-[A-Za-z0-9_-]{20,}', 0, True, ('mixed', 3, 3.0, True)),
    ('stripe_secret_key', b'[sr]k_(?:live|test)_[A-Za-z0-9]{16,}', 0, False, None),
    ('stripe_webhook_secret', b'whsec_[A-Za-z0-9+/=]{24,}', 0, False, None),
    ('huggingface_token', b'hf_[A-Za-z0-9]{30,}', 0, True, ('mixed', 3, 3.0, False)),
    ('npm_token', b'npm_[A-Za-z0-9]{36,}', 0, True, ('mixed', 4, 3.0, False)),
    ('pypi_token', b'pypi-AgE[A-Za-z0-9_-]{50,}', 0, False, None),
    ('twilio_api_key', b'(SK[0-9a-f]{32})(?:[^0-9A-Za-z]|$)', 1, True, None),
    ('twilio_auth_token', b'(?i:twilio)[A-Za-z0-9_. -]{0,30}?(?i:token|secret)\\\\?["\']?\\s{0,8}[:=]\\s{0,8}\\\\?["\']?([0-9a-f]{32})(?:[^0-9A-Za-z]|$)', 1, False, None),
    ('sendgrid_api_key', b'SG\\.[A-Za-z0-9_-]{22}\\.[A-Za-z0-9_-]{43}', 0, False, None),
    ('azure_storage_key', b'AccountKey=([A-Za-z0-9+/]{40,}={0,2})', 1, False, None),
    ('azure_sas_signature', b'sig=((?:[A-Za-z0-9+/]|%2[BbFf]){30,}(?:=|%3[Dd]){0,2})', 1, True, None),
    ('digitalocean_token', b'do[opr]_v1_[a-f0-9]{64}', 0, False, None),
    ('docker_hub_pat', b'dckr_pat_[A-Za-z0-9_-]{27,}', 0, False, None),
    ('shopify_token', b'shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}', 0, False, None),
    ('age_secret_key', b'AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}', 0, False, None),
    ('hb_handle', b'hb_cred_[A-Za-z0-9_-]{32}', 0, False, None),
    ('aws_secret_access_key', b'(?i:secret[_-]?access[_-]?key)\\\\?["\']?\\s{0,8}[:=]\\s{0,8}\\\\?["\']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)', 1, False, ('mixed', 0, 3.5, False)),
    ('aws_secret_access_key', b'(?:AKIA|ASIA)[A-Z2-7]{16}[^\\n]{0,64}?[^A-Za-z0-9/+=]([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)', 1, False, ('mixed', 0, 3.5, False)),
    ('url_basic_auth', b':(?://|\\\\/\\\\/)[^\\s/?#@:"\'<>\\\\\\[\\]{}|^`]{1,256}:([^\\s/?#@"\'<>\\\\]{1,256})@', 1, False, None),
    ('bearer_token', b'(?i:bearer) +([A-Za-z0-9._~+/-]{16,}=*)', 1, False, ('entropy', 0, 3.0, False)),
    ('authorization_header', b'(?i:authorization)\\\\?["\']?\\s*[:=]\\s*\\\\?["\']?(?:(?i:basic|token|bearer|digest|apikey|api-key|sso-key) +)?([A-Za-z0-9._~+/:-]{12,}=*)', 1, False, ('entropy', 0, 3.0, False)),
]


def entropy(s):
    if not s:
        return 0.0
    counts = {}
    for b in s:
        counts[b] = counts.get(b, 0) + 1
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def passes(check, span):
    if check is None:
        return True
    kind, skip, bits, digit = check
    s = span[skip:]
    if kind == "mixed":
        if not (any(65 <= b <= 90 for b in s) and any(97 <= b <= 122 for b in s)):
            return False
        if digit and not any(48 <= b <= 57 for b in s):
            return False
    return entropy(s) >= bits


def compile_rules():
    compiled = []
    for _, rx, group, _, _ in RULES:
        compiled.append(re.compile(rx))
    return compiled


# One compiled regex per family, each run with finditer: `re` searches a literal prefix
# fast, so this beats one alternation of all families (which tries every branch at
# almost every position) by about 30 times on these inputs.
COMPILED = compile_rules()


def scrub_families(text):
    spans = []
    for rank, ((name, _, group, left, check), rx) in enumerate(zip(RULES, COMPILED)):
        for m in rx.finditer(text):
            if left and m.start() > 0 and text[m.start() - 1 : m.start()].isalnum():
                continue
            start, end = m.span(group)
            if passes(check, text[start:end]):
                spans.append((start, -end, rank, name))
    spans.sort()
    out, pos, count, cur = [], 0, 0, None
    for start, neg_end, _, name in spans:
        end = -neg_end
        if cur and start < cur[1]:
            cur[1] = max(cur[1], end)
            continue
        if cur:
            out.append(text[pos : cur[0]] + b"[REDACTED:" + cur[2].encode() + b"]")
            pos = cur[1]
        cur = [start, end, name]
        count += 1
    if cur:
        out.append(text[pos : cur[0]] + b"[REDACTED:" + cur[2].encode() + b"]")
        pos = cur[1]
    out.append(text[pos:])
    return b"".join(out), count


def percent(value, upper, every):
    out = []
    for b in value:
        if not every and (chr(b).isalnum() and b < 128 or b in b"-_.~"):
            out.append(bytes([b]))
        else:
            out.append((b"%%%02X" if upper else b"%%%02x") % b)
    return b"".join(out)


def forms(value):
    out = {value}
    for alt in (None, b"-_"):
        enc = base64.b64encode(value, alt)
        out.add(enc)
        out.add(enc.rstrip(b"="))
        for off in range(3):
            e = base64.b64encode(b"\0" * off + value + b"\0\0", alt)
            out.add(e[-(-8 * off // 6) : 8 * (off + len(value)) // 6])
    for upper in (True, False):
        out.add(percent(value, upper, False))
        out.add(percent(value, upper, True))
    out.add(value.hex().encode())
    out.add(value.hex().upper().encode())
    try:
        text = value.decode()
        minimal = json.dumps(text, ensure_ascii=False)[1:-1].encode()
        out.add(minimal)
        out.add(minimal.replace(b"/", b"\\/"))
        out.add(json.dumps(text)[1:-1].encode())
    except UnicodeDecodeError:
        pass
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--secrets-file")
    p.add_argument("--iterations", type=int, default=5)
    a = p.parse_args()
    data = open(a.input, "rb").read()
    live = []
    if a.secrets_file:
        for line in open(a.secrets_file, "rb").read().split(b"\n"):
            if line:
                live.extend(forms(line))
        live.sort(key=len, reverse=True)

    def run():
        text, count = scrub_families(data)
        for f in live:
            if f in text:
                count += text.count(f)
                text = text.replace(f, b"[REDACTED:live_secret]")
        return text, count

    cpu, wall, count = [], [], 0
    for _ in range(a.iterations):
        c, w = time.thread_time(), time.perf_counter()
        _, count = run()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    mib = len(data) / (1024 * 1024)
    print(json.dumps({
        "input_bytes": len(data),
        "live_forms": len(live),
        "redactions": count,
        "mib_s": mib / statistics.median(cpu),
        "wall_mib_s": mib / statistics.median(wall),
    }))


if __name__ == "__main__":
    main()
