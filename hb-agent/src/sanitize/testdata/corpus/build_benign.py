#!/usr/bin/env python3
"""Select the benign corpus from text nobody here wrote: gettext catalogues
(/usr/share/locale/*/LC_MESSAGES/*.mo), man pages (English and translated), Debian
changelogs and NEWS files (/usr/share/doc), and the Python standard library's
docstrings. Only paragraphs that use the words an injection detector keys on
(ignore, instructions, system, prompt, previous, override, command, reveal, …, in each
language) are kept, so the set is hard. Output: JSON Lines on stdout, one object
{id, text, language, kind, source}. Deterministic for a given machine."""

import ast
import gettext
import glob
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import unicodedata

TRIGGERS = {
    "en": r"\b(ignor\w*|instruction\w*|system|prompt\w*|previous\w*|override\w*|command\w*|forget\w*|disregard\w*|reveal\w*|repeat\w*|bypass\w*|administrator|admin|execute|password\w*)\b",
    "de": r"(ignor\w*|anweisung\w*|system\w*|eingabeaufforderung\w*|vorherig\w*|vorige\w*|überschreib\w*|befehl\w*|vergess\w*|passwort\w*|administrator\w*|ausführ\w*)",
    "fr": r"(ignor\w*|instruction\w*|système\w*|invite\w*|précédent\w*|remplac\w*|command\w*|oubli\w*|mot de passe|administrat\w*|exécut\w*)",
    "es": r"(ignor\w*|instrucci\w*|sistema\w*|indicador\w*|anterior\w*|sobrescrib\w*|comando\w*|olvid\w*|contraseña\w*|administrador\w*|ejecut\w*)",
    "pt": r"(ignor\w*|instruç\w*|sistema\w*|prompt\w*|anterior\w*|sobrescrev\w*|comando\w*|esquec\w*|senha\w*|administrador\w*|execut\w*)",
    "it": r"(ignor\w*|istruzion\w*|sistema\w*|prompt\w*|precedent\w*|sovrascriv\w*|comand\w*|dimentic\w*|password|amministrator\w*|esegu\w*)",
    "ru": r"(игнор\w*|инструкц\w*|систем\w*|приглашени\w*|предыдущ\w*|переопредел\w*|команд\w*|забуд\w*|забыть|парол\w*|администратор\w*|выполн\w*)",
    "zh": r"(忽略|指令|系统|提示|之前|以前|覆盖|命令|忘记|密码|管理员|执行|指示|系統|提示|覆蓋|密碼|執行)",
    "ja": r"(無視|指示|システム|プロンプト|以前|前の|上書き|コマンド|忘れ|パスワード|管理者|実行)",
    "ko": r"(무시|지시|시스템|프롬프트|이전|덮어|명령|잊|암호|비밀번호|관리자|실행)",
    "nl": r"(negeer\w*|instructie\w*|systeem\w*|prompt\w*|vorige|overschrijv\w*|opdracht\w*|vergeet\w*|wachtwoord\w*|beheerder\w*|uitvoer\w*)",
    "pl": r"(ignoruj\w*|instrukcj\w*|system\w*|znak zachęty|poprzedni\w*|nadpis\w*|polecen\w*|zapomn\w*|hasł\w*|administrator\w*|wykon\w*)",
}
LOCALES = {
    "de": "de", "fr": "fr", "es": "es", "pt": "pt", "pt_BR": "pt", "it": "it", "ru": "ru",
    "zh_CN": "zh", "zh_TW": "zh", "ja": "ja", "ko": "ko", "nl": "nl", "pl": "pl",
}
CJK = {"zh", "ja", "ko"}


def norm(s):
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", s)).strip()


def hits(lang, text):
    return len(re.findall(TRIGGERS[lang], text, re.IGNORECASE))


def long_enough(lang, text):
    return len(text) >= (14 if lang in CJK else 40) and len(text) <= 1500


def mo_texts():
    """Translated messages that use trigger words, per language (and their English)."""
    for loc, lang in sorted(LOCALES.items()):
        for path in sorted(glob.glob(f"/usr/share/locale/{loc}/LC_MESSAGES/*.mo")):
            try:
                with open(path, "rb") as f:
                    cat = gettext.GNUTranslations(f)._catalog
            except Exception:
                continue
            pkg = os.path.basename(path)[:-3]
            for k, v in cat.items():
                msgid = k[0] if isinstance(k, tuple) else k
                if not msgid or not isinstance(v, str):
                    continue
                t = v.replace("&", "").replace("_", "", 1) if len(v) < 200 else v
                if long_enough(lang, t) and hits(lang, t):
                    yield lang, "ui_string", f"{pkg}.mo ({loc})", t
                if long_enough("en", msgid) and hits("en", msgid):
                    yield "en", "ui_string", f"{pkg}.mo (msgid)", msgid


def man_pages():
    for d, lang in [("", "en")] + [(l + "/", LOCALES[l]) for l in LOCALES if os.path.isdir(f"/usr/share/man/{l}")]:
        pages = sorted(glob.glob(f"/usr/share/man/{d}man[1-8]/*.gz"))
        for p in pages:
            try:
                raw = gzip.open(p, "rt", errors="replace").read()
            except Exception:
                continue
            if hits(lang, raw) < 3:
                continue
            yield lang, p, raw


def render(path):
    env = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="0")
    try:
        out = subprocess.run(["man", "-l", path], capture_output=True, env=env, timeout=20).stdout
        out = subprocess.run(["col", "-bx"], input=out, capture_output=True, timeout=20).stdout
    except Exception:
        return ""
    return out.decode("utf-8", "replace")


def paragraphs(text):
    for para in re.split(r"\n\s*\n", text):
        yield norm(para)


def man_texts(per_lang_pages):
    seen = {}
    for lang, path, _raw in man_pages():
        if seen.get(lang, 0) >= per_lang_pages:
            continue
        seen[lang] = seen.get(lang, 0) + 1
        for para in paragraphs(render(path)):
            if long_enough(lang, para) and hits(lang, para):
                yield lang, "man_page", path, para


def doc_texts():
    files = sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz") + glob.glob("/usr/share/doc/*/NEWS*.gz")
                   + glob.glob("/usr/share/doc/*/changelog.gz") + glob.glob("/usr/share/doc/*/README*"))
    for p in files:
        try:
            raw = (gzip.open(p, "rt", errors="replace") if p.endswith(".gz") else open(p, errors="replace")).read()
        except Exception:
            continue
        kind = "changelog" if "changelog" in p or "NEWS" in p else "readme"
        # Changelog entries: the bullet paragraphs between the header and the signature.
        for block in re.split(r"\n\s*\n|\n(?=  \* )|\n(?=   - )", raw):
            t = norm(block)
            if t.startswith("--") or re.match(r"^[\w.+-]+ \([^)]*\) ", t):
                continue
            if long_enough("en", t) and hits("en", t):
                adv = kind == "changelog" and re.search(r"CVE-\d{4}-\d+", t)
                yield "en", "security_advisory" if adv else kind, p, t


def python_docstrings():
    root = os.path.dirname(os.__file__)
    for p in sorted(glob.glob(root + "/*.py") + glob.glob(root + "/*/*.py")):
        if "/test" in p or "/idlelib/idle_test" in p:
            continue
        try:
            tree = ast.parse(open(p, encoding="utf-8").read())
        except Exception:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for para in paragraphs(doc):
                    if long_enough("en", para) and hits("en", para):
                        yield "en", "docstring", "python3.11 " + os.path.relpath(p, root), para


def main():
    caps = {"ui_string": 90, "man_page": 45, "changelog": 150, "security_advisory": 140,
            "readme": 80, "docstring": 170}
    # Per (kind, language) caps, the hardest (most trigger words) first within a source,
    # one source never more than a few texts.
    per_source = {"ui_string": 3, "man_page": 3, "changelog": 2, "security_advisory": 2, "readme": 2, "docstring": 2}
    pools = {}
    seen = set()
    gens = [mo_texts(), man_texts(40), doc_texts(), python_docstrings()]
    for g in gens:
        for lang, kind, source, text in g:
            key = hashlib.sha256(text.lower().encode()).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            pools.setdefault((kind, lang), []).append((source, text))
    out = []
    for (kind, lang), items in sorted(pools.items()):
        # Stable order: by trigger count (descending), then a hash, so the pick is hard
        # and not biased to the alphabetically first packages.
        items.sort(key=lambda st: (-min(hits(lang, st[1]), 4), hashlib.sha256(st[1].encode()).hexdigest()))
        taken, by_src = [], {}
        cap = caps[kind] if kind != "ui_string" or lang != "en" else 60
        for source, text in items:
            if len(taken) >= cap:
                break
            base = source.split(" (")[0]
            if by_src.get(base, 0) >= per_source[kind]:
                continue
            by_src[base] = by_src.get(base, 0) + 1
            taken.append((source, text))
        for i, (source, text) in enumerate(taken):
            out.append({"text": text, "language": lang, "kind": kind, "source": source})
    for i, e in enumerate(out):
        e["id"] = "b-%s-%s-%s" % (e["language"], e["kind"], hashlib.sha256(e["text"].encode()).hexdigest()[:10])
    for e in out:
        print(json.dumps({"id": e["id"], **{k: e[k] for k in ("text", "language", "kind", "source")}}, ensure_ascii=False))
    print(f"{len(out)} benign texts", file=sys.stderr)


if __name__ == "__main__":
    main()
