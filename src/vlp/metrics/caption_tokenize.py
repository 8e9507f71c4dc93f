"""PTB-style caption tokenisation in pure Python, matching what pycocoevalcap's `PTBTokenizer` produces.

pycocoevalcap pipes all captions through Stanford CoreNLP 3.4.1's PTBTokenizer (`-preserveLines
-lowerCase`, a Java subprocess) and then drops the tokens in `PUNCTUATIONS`. This module reproduces the
result for ordinary English captions without Java: lower-casing; splitting off punctuation, `$ % #`,
brackets (which become -lrb- -rrb- -lsb- -rsb- -lcb- -rcb-: Java lower-cases them, so pycocoevalcap's
upper-case "-LRB-" entry never matches and they stay), the clitics 's 'm 'd 're 've 'll n't and the
splits can|not gon|na wan|na got|ta lem|me gim|me 't|is 't|was; keeping hyphenated words, numbers like
3.5 / 1,000 / 10:30 / -5, acronyms like u.s. and a few abbreviations (mr. dr. st. etc. ...) whole;
normalising curly quotes, `&amp;`, unicode dashes/ellipsis, ½ ¼ ¾, £ -> #, € -> $; deleting characters
outside the Basic Multilingual Plane (emoji), which Java reports as "untokenizable" and drops.

It is checked token for token against the Java tokenizer on the 505 real COCO captions of
/work/shared/data/coco-sample and on tricky generated ones (tests/parity/test_pycocoevalcap.py).
Known differences (rare in captions; the test keeps them as an xfail list with the exact strings):
  - "y'all ain't" -> Java "y' all ai n't" (a rule for th'/y' before a word); here "y'all ai n't".
  - "3x4 10x 2.5x" -> Java "3x4 10x 2.5 x" (a decimal number followed by letters); here "2.5x".
  - abbreviations: Java 3.4.1 keeps the period of a long, partly case-sensitive list; `_ABBREVIATIONS`
    holds the common ones (checked: mr. mrs. dr. st. etc. vs. no./fig. before a number, mass. pa. calif.),
    so a rarer one at a sentence end (e.g. "Ill.") may lose its period here and keep it in Java.
  - Java splits input lines at unicode line separators (U+2028 checked), which misaligns
    pycocoevalcap's captions; here every caption stays one caption.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence

# pycocoevalcap/tokenizer/ptbtokenizer.py drops these tokens after Java tokenisation.
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"])

# Abbreviations whose period Java keeps (a subset of CoreNLP's lists, those seen in captions).
_ABBREVIATIONS = (
    "mr|mrs|ms|dr|drs|prof|st|ste|mt|ft|jr|sr|bros|etc|vs|gen|col|lt|sgt|capt|rev|gov|sen|rep|ave|blvd|rd"
    "|inc|corp|ltd|co|cos|assn|univ|dept|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed"
    "|thu|thurs|fri|calif|ariz|colo|conn|fla|mich|minn|okla|tenn|mass|pa|wisc|wyo|al|est|tel|ext|sq"
)
_TOKEN = re.compile(
    r"""
    (?P<sgml> </?[A-Za-z!?][^>\r\n]*> )
  | (?P<url> (?:https?|ftp)://[^\s<>"]*[^\s<>".,!?;:')\]] )
  | (?P<acronym> [^\W\d_](?:\.[^\W\d_])+\.(?!\w) )
  | (?P<abbrev> (?i:""" + _ABBREVIATIONS + r""")\.(?!\w) | (?i:fig|no)\.(?=\s?\d) )
  | (?P<apostrophe_word> '(?i:em|n'|[1-9]0s|till?|cause|twixt|tis|twas)(?!\w) )
  | (?P<word> (?:(?<![\w.])[-+](?=\d))? (?:[#@](?=[^\W\d_]))? \w+
        (?: (?:[-./&\u2010]|(?<=\d)[,:](?=\d)|'(?=[^\W\d_])) \w+ )* (?:\+\+|\#)? )
  | (?P<ellipsis> \.\.\.+ )
  | (?P<dashes> --+ )
  | (?P<marks> [?!]+ )
  | (?P<quotes> ''|``|" )
  | (?P<other> \S )
    """,
    re.VERBOSE,
)
_CLITIC = re.compile(r"^(.+?)('s|'m|'d|'re|'ve|'ll|n't)$")
_ASSIMILATIONS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "wanna": ("wan", "na"), "gotta": ("got", "ta"),
                  "lemme": ("lem", "me"), "gimme": ("gim", "me"), "'tis": ("'t", "is"), "'twas": ("'t", "was")}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_NORMALISE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": " -- ", "\u2013": " -- ",
    "\u2026": " ... ", "\u00bd": "1/2", "\u00bc": "1/4", "\u00be": "3/4", "\u00a3": "#", "\u20ac": "$",
})
_OUTSIDE_BMP = re.compile("[\U00010000-\U0010ffff]")


def _split_word(word: str) -> list[str]:
    """Clitics and assimilations off a lower-cased word ("i'd've" -> i 'd 've, "can't" -> ca n't)."""
    if word in _ASSIMILATIONS:
        return list(_ASSIMILATIONS[word])
    tail: list[str] = []
    while True:
        m = _CLITIC.match(word)
        if m is None or (m.group(2) == "n't" and m.group(1).endswith("'")):
            break
        word = m.group(1)
        tail.insert(0, m.group(2))
    return [word, *tail]


def ptb_tokens(caption: str) -> list[str]:
    """PTB tokens of one caption, lower-cased, before pycocoevalcap's punctuation removal."""
    text = _OUTSIDE_BMP.sub("", caption.replace("&amp;", "&").translate(_NORMALISE)).lower()  # no rule here is case-sensitive
    tokens: list[str] = []
    for m in _TOKEN.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind == "word" or kind == "apostrophe_word":
            if "'" in tok or tok in _ASSIMILATIONS:
                tokens.extend(_split_word(tok))
            else:
                tokens.append(tok)
        elif kind == "ellipsis":
            tokens.append("...")
        elif kind == "quotes":
            tokens.append("``" if tok in ('``', '"') else "''")
        else:
            tokens.append(_BRACKETS.get(tok, tok))
    return tokens


# Most captions are lower-case-able letters, spaces, commas and one final period. For those every
# rule above reduces to "split on spaces and commas, drop the final period" unless a word is an
# assimilation ("gonna") or the last word is an abbreviation ("st."), so they skip the regex scan:
# 25,000 COCO-style captions tokenise ~5x faster (benchmarks/bench_caption_metrics.py, "PTB tokenize").
_PLAIN = re.compile(r"[a-z ,]*(?:[a-z]\.)?[ ]*")
_ABBREVIATION_SET = frozenset(_ABBREVIATIONS.split("|"))


def _plain_tokens(text: str) -> list[str] | None:
    """Tokens of a lower-cased caption made only of letters, spaces, commas and a final period,
    or None when a rule beyond splitting could apply (then the full scan decides)."""
    if _PLAIN.fullmatch(text) is None:
        return None
    words = text.replace(",", " ").split()
    if words and words[-1].endswith("."):
        if words[-1][:-1] in _ABBREVIATION_SET:
            return None
        words[-1] = words[-1][:-1]
    if any(w in _ASSIMILATIONS for w in words):
        return None
    return words


def ptb_tokenize(caption: str) -> str:
    """One caption as pycocoevalcap's PTBTokenizer returns it: lower-cased tokens without punctuation,
    joined by single spaces."""
    if caption.isascii():
        plain = _plain_tokens(caption.lower())
        if plain is not None:
            return " ".join(plain)
    return " ".join(t for t in ptb_tokens(caption.replace("\n", " ")) if t not in PUNCTUATIONS)


def tokenize_captions(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """{image id: [captions]} -> {image id: [tokenised captions]}, like `PTBTokenizer().tokenize` but
    taking plain strings instead of {"caption": ...} records."""
    return {key: [ptb_tokenize(c) for c in caps] for key, caps in captions.items()}
