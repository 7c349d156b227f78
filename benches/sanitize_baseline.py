#!/usr/bin/env python3
"""The baseline for `cargo xtask bench sanitize`: seed 003's InputSanitizer, as published.

Its six injection regexes, four command regexes and control-character stripping are
copied unchanged; the only difference is that the logger calls are left out (they
write to stderr, which would measure the terminal instead of the sanitizer).

    sanitize_baseline.py --input FILE [--iterations K]   throughput on FILE as one string
    sanitize_baseline.py --corpus FILE.json              how many corpus entries it flags

Both print one JSON object. Standard library only.
"""

import argparse
import json
import re
import statistics
import sys
import time
from typing import Tuple


class InputSanitizer:
    """Enforces the hermetic context barrier by sanitizing untrusted inputs."""

    def __init__(self):
        # Common prompt injection signatures
        self.injection_patterns = [
            re.compile(r"ignore\s+previous\s+instructions", re.IGNORECASE),
            re.compile(r"system\s*:", re.IGNORECASE),
            re.compile(r"assistant\s*:", re.IGNORECASE),
            re.compile(r"override\s+system\s+prompt", re.IGNORECASE),
            re.compile(r"you\s+are\s+now\s+a\s+malicious", re.IGNORECASE),
            re.compile(r"<\/system>", re.IGNORECASE),  # Tag escape attempts
        ]
        # Dangerous shell/system execution commands
        self.dangerous_commands = [
            re.compile(r"rm\s+-rf", re.IGNORECASE),
            re.compile(r"chmod\s+777", re.IGNORECASE),
            re.compile(r"curl\s+.*\|\s*bash", re.IGNORECASE),
            re.compile(r"wget\s+.*\|\s*bash", re.IGNORECASE),
        ]

    def sanitize_string(self, text: str) -> Tuple[str, bool]:
        flagged = False
        sanitized_text = text
        # 1. Check for Prompt Injection Patterns
        for pattern in self.injection_patterns:
            if pattern.search(sanitized_text):
                sanitized_text = pattern.sub("[REDACTED INJECTION ATTEMPT]", sanitized_text)
                flagged = True
        # 2. Check for Dangerous Command Executions
        for pattern in self.dangerous_commands:
            if pattern.search(sanitized_text):
                sanitized_text = pattern.sub("[REDACTED COMMAND]", sanitized_text)
                flagged = True
        # 3. Strip Control Characters and Null Bytes
        clean_text = "".join(ch for ch in sanitized_text if ord(ch) >= 32 or ch in "\n\r\t")
        if clean_text != sanitized_text:
            flagged = True
        sanitized_text = clean_text
        return sanitized_text, flagged


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--corpus")
    args = ap.parse_args()
    s = InputSanitizer()
    if args.corpus:
        with open(args.corpus, encoding="utf-8") as f:
            entries = json.load(f)
        texts = [e if isinstance(e, str) else e["text"] for e in entries]
        flagged = sum(1 for t in texts if s.sanitize_string(t)[1])
        print(json.dumps({"entries": len(texts), "flagged": flagged}))
        return 0
    if not args.input:
        ap.error("--input or --corpus is required")
    with open(args.input, encoding="utf-8") as f:
        text = f.read()
    size = len(text.encode("utf-8"))
    _, flagged = s.sanitize_string(text)  # warm-up, as the Rust side does
    start = time.perf_counter()
    cpu_start = time.process_time()
    each = []
    for _ in range(args.iterations):
        t = time.perf_counter()
        s.sanitize_string(text)
        each.append(time.perf_counter() - t)
    secs = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    print(json.dumps({
        "bytes": size,
        "iterations": args.iterations,
        "seconds": secs,
        "cpu_seconds": cpu,
        "mb_per_s": size * args.iterations / secs / 1e6,
        "mb_per_cpu_s": size * args.iterations / cpu / 1e6,
        "median_mb_per_s": size / statistics.median(each) / 1e6,
        "flagged": flagged,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
