"""Secret redaction before anything is stored: keys and tokens become ``[REDACTED]``.

    >>> redact("use sk-ant-api03-abcdefghijklmnopqrstuvwx please")
    'use [REDACTED] please'
    >>> redact("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    'AWS_SECRET_ACCESS_KEY=[REDACTED]'

The rules come from two places, joined in one precompiled alternation (a text is scanned once
whatever the number of formats):

* **detect-secrets' regex plugins** (Yelp's maintained scanner, ``detect_secrets.plugins``):
  every ``RegexBasedDetector`` it ships, read at import, so a new release brings its new
  formats: Stripe, Slack tokens and webhooks, GitLab, GitHub, npm, PyPI, SendGrid, Twilio,
  Square, Mailchimp, Telegram, Discord, Azure storage, IBM, Cloudant, SoftLayer, Artifactory,
  AWS, OpenAI, JWTs, passwords in URLs (``://user:password@``), private-key headers. Left
  out: ``IPPublicDetector`` (an address is not a secret, and notes about servers need it),
  and the keyword and entropy plugins, which are not regexes (they judge a line of a source
  file, with many false hits on prose).
* **ours**, for what those miss or match only in part: any ``sk-``/``sk-ant-``/``sk-proj-``
  key, ``AIza`` Google keys, ``xapp-`` Slack app tokens, ``hf_`` Hugging Face and ``npm_``
  tokens outside an ``.npmrc``, Stripe keys of any length (test keys too), ``Bearer`` and
  ``Authorization: Basic`` credentials, a PEM private key whole (or to the end of the text
  when its END line is missing), an AWS secret access key with or without its label (without
  one: a run of exactly 40 base64 characters mixing upper case, lower case and digits, which
  a hex digest never does), ``x-api-key`` values, and ``.env``-style assignments whose name
  says secret (``DB_PASSWORD=``, ``SECRET_KEY=``, ``export OPENAI_API_KEY=``), whose name is
  kept. A ``$VARIABLE``, ``${VARIABLE}`` or ``<placeholder>`` is never a secret.

Where a rule marks the secret with a group (a password inside a URL), only the group is
replaced; otherwise the match is, extended to the end of its token, so a key longer than a
rule's fixed length never leaves its tail behind. ``redact_value`` does the same for every
string of a JSON value (the memory API's ``metadata``).

Speed: Python's ``re`` tries every alternative at every position, so ~60 rules joined cost
~5 ms per 10 KB, and a pattern that does not begin with a literal (``\b``, a class,
``(?i)``) ~0.4 ms; one that does is found by a fast substring search (~5 µs). So each rule
names the literal marks one of which its match must hold (``sk-``, ``://``,
``AccountKey=``...; looked for with ``in``) and runs alone, only when a mark is in the text,
from a pattern that begins with its literal (a word boundary before it is checked on the
match). Rules whose label may be in any case (``Bearer``, ``DB_Password=``) are matched only
where their mark occurs in the lower-cased text. The few formats without a literal (an
unlabelled AWS secret, Discord, Telegram, Twilio, Mailchimp, Artifactory) are looked for only
in the text's long whitespace-separated tokens. Cost:
``scripts/bench_redact.py`` (README, Memory). detect-secrets' assignment templates
(``ibm_cloud_key = ...``, ``cl_password: ...``) are keyword rules in disguise (any ``key``,
``token`` or ``pass`` with an optional prefix): left out like the keyword plugin, which
leaves out the two plugins that have nothing else (IBM Cloud IAM, IBM COS HMAC); our
``.env`` rule covers such assignments by name.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import re
from typing import Any

REDACTED = "[REDACTED]"
LEFT_OUT = ("IPPublicDetector", "IbmCloudIamDetector", "IbmCosHmacDetector")
_ASSIGNMENT_TEMPLATE = r"(?:(?<=\W)|(?<=^))"   # detect-secrets' build_assignment_regex
# the rest of the token a match ends inside of (never past a space or quote it matched)
_TOKEN_TAIL = r"(?:(?<=[A-Za-z0-9_\-])[A-Za-z0-9_\-]*)?"
_AROUND = " \t\r\n=:\"'"
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
MIN_TOKEN = 34             # the shortest secret a token rule finds, Artifactory's aside


@dataclasses.dataclass(frozen=True)
class Rule:
    """One format. ``kind``: how a match is replaced (``whole``, ``labelled``: group 1 is a
    label to keep, ``grouped``: a group is the secret, ``bare_aws``). ``exact``: literal marks,
    one of which is in every match, the pattern beginning with it; ``folded``: lower-case
    marks where a match begins (``backup``: at the start of the word that holds the mark);
    neither: a token rule. ``word``: the match must not follow a word character."""
    kind: str
    pattern: str
    exact: tuple[str, ...] = ()
    folded: tuple[str, ...] = ()
    word: bool = False
    backup: bool = False
    anchored: bool = True          # a folded mark begins the match (else: anywhere in it)
    then: str = ""                 # the character after the mark's word (and blanks), if any

    @functools.cached_property
    def regex(self) -> re.Pattern:
        tail = _TOKEN_TAIL if self.kind == "whole" else ""
        return re.compile(self.pattern + tail, re.IGNORECASE if self.folded else 0)

    def replace(self, match: re.Match) -> str:
        whole = match[0]
        if self.word and match.start() and match.string[match.start() - 1] in _WORD:
            return whole
        if self.kind == "labelled":
            if whole[len(match[1]):].startswith("[REDACTED"):   # an earlier rule's
                return whole
            return match[1] + REDACTED
        if self.kind == "bare_aws":
            mixed = (any(c.isupper() for c in whole) and any(c.islower() for c in whole)
                     and any(c.isdigit() for c in whole))
            return REDACTED if mixed else whole
        if self.kind == "grouped":
            for group in range(1, self.regex.groups + 1):
                # the outermost group that matched is the secret, if it is one (GitLab's
                # optional "XY_" partition group is not)
                if match[group] and len(match[group]) >= 8:
                    a, b = match.span(group)
                    return whole[:a - match.start()] + REDACTED + whole[b - match.start():]
        # a rule may match the space or quote around a token (detect-secrets' Artifactory)
        core = whole.strip(_AROUND)
        at = whole.index(core) if core else 0
        return whole[:at] + REDACTED + whole[at + len(core):]

    def apply(self, text: str, lowered: str) -> str:
        """``text`` redacted by this rule, which ``redact`` runs only when one of its marks is
        in the text (``lowered`` is ``text.lower()``)."""
        if not self.folded or not self.anchored or len(lowered) != len(text):
            # (a letter whose lower case is longer shifts the positions: the slow way)
            return self.regex.sub(self.replace, text)
        if self.then and self.then not in text:
            return text
        edits: list[tuple[int, int, str]] = []
        for mark in self.folded:
            at = lowered.find(mark)
            while at >= 0:
                if self.then:           # a cheap look before the regex: NAME = ...
                    end = at + len(mark)
                    while end < len(text) and lowered[end] in _WORD:
                        end += 1
                    while end < len(text) and lowered[end] in " \t":
                        end += 1
                    if end == len(text) or text[end] != self.then:
                        at = lowered.find(mark, at + 1)
                        continue
                begin = at
                while self.backup and begin and lowered[begin - 1] in _WORD:
                    begin -= 1
                match = self.regex.match(text, begin)
                if match and (not edits or match.start() >= edits[-1][1]):
                    edits.append((match.start(), match.end(), self.replace(match)))
                at = lowered.find(mark, max(at + 1, match.end() if match else 0))
        for begin, end, replacement in sorted(edits, reverse=True):
            text = text[:begin] + replacement + text[end:]
        return text


_GH = ("gh",)                  # ghp_, gho_, ghu_, ghs_, ghr_: the rules begin with "gh"
_OURS = (
    # PEM blocks first: they span lines and contain base64 that other patterns could nibble;
    # without an END line, everything that still looks like key material
    Rule("whole", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?-----END [A-Z0-9 ]*"
                  r"PRIVATE KEY-----|[A-Za-z0-9+/=\s:,\-]*)", exact=("PRIVATE KEY-----",)),
    Rule("whole", r"\bbearer\s+[A-Za-z0-9\-._~+/]{16,}=*", folded=("bearer",)),
    # labelled: the label (group 1) is kept
    Rule("labelled", r"(aws_secret_access_key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{16,}",
         folded=("aws_secret_access_key",), backup=True),
    Rule("labelled", r"(\bx-api-key[\"']?\s*:\s*[\"']?)(?![$<{])[^\s\"']{8,}",
         folded=("x-api-key",)),
    Rule("labelled", r"(\bauthorization[\"']?\s*[:=]\s*[\"']?basic\s+)[A-Za-z0-9+/]{6,}={0,2}",
         folded=("authorization",)),
    # .env-style: the name ends with what says secret (max_tokens=4096 is no secret)
    Rule("labelled", r"(\b[A-Za-z0-9_]*(?:PASSWORD|PASSWD|PASSPHRASE|SECRET|SECRET_KEY(?:_BASE)?"
                     r"|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?|AUTH_?KEY)\b"
                     r"[ \t]*=[ \t]*[\"']?)(?![$<{\"'\s])[^\s\"'\]]{4,}",
         folded=("pass", "secret", "token", "key", "credential"), backup=True, then="="),
    Rule("whole", r"sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}", exact=("sk-",), word=True),
    Rule("whole", r"[rs]k_(?:live|test)_[0-9A-Za-z]{16,}", exact=("k_live_", "k_test_"),
         word=True),
    Rule("whole", r"gh[pousr]_[A-Za-z0-9]{20,}", exact=_GH, word=True),
    Rule("whole", r"github_pat_[A-Za-z0-9_]{20,}", exact=("github_pat_",), word=True),
    Rule("whole", r"xox[abposr]-[A-Za-z0-9\-]{10,}", exact=("xox",), word=True),
    Rule("whole", r"xapp-\d-[A-Za-z0-9\-]{10,}", exact=("xapp-",), word=True),
    Rule("whole", r"hf_[A-Za-z0-9]{30,}", exact=("hf_",), word=True),
    Rule("whole", r"npm_[A-Za-z0-9]{36}", exact=("npm_",), word=True),
    Rule("whole", r"glpat-[A-Za-z0-9_\-]{20,}", exact=("glpat-",), word=True),
    Rule("whole", r"AIza[A-Za-z0-9_\-]{35}", exact=("AIza",), word=True),
    # header.payload.signature, both JSON parts base64url of "{" (eyJ); unsigned ones too
    Rule("whole", r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
         exact=("eyJ",), word=True),
)

# detect-secrets plugins: (exact, folded) marks of their patterns; None: token rules
_PLUGIN_MARKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]] | None] = {
    "ArtifactoryDetector": None,
    "AWSKeyDetector": (("A3T", "ABIA", "ACCA", "AKIA", "ASIA"), ("aws",)),
    "AzureStorageKeyDetector": (("AccountKey=",), ()),
    "BasicAuthDetector": (("://",), ()),
    "CloudantDetector": ((".cloudant.com",), ()),
    "DiscordBotTokenDetector": None,
    "GitHubTokenDetector": (_GH, ()),
    "GitLabTokenDetector": (("gl", "GR1348941"), ()),
    "JwtTokenDetector": (("eyJ",), ()),
    "MailchimpDetector": None,
    "NpmDetector": ((":_authToken=",), ()),
    "OpenAIDetector": (("T3BlbkFJ",), ()),
    "PrivateKeyDetector": (("PRIVATE KEY", "PuTTY-User-Key-File"), ()),
    "PypiTokenDetector": (("pypi-",), ()),
    "SendGridDetector": (("SG.",), ()),
    "SlackDetector": ((), ("xox", "https://hooks.slack.com")),   # (case-insensitive ones)
    "SoftlayerDetector": (("softlayer.com",), ()),
    "SquareOAuthDetector": (("sq0csp-",), ()),
    "StripeDetector": (("k_live_",), ()),
    "TelegramBotTokenDetector": None,
    "TwilioKeyDetector": None,
}

# an AWS secret access key without its label: judged in ``replace`` (mixed classes)
_BARE_AWS = Rule("bare_aws", r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def _detect_secrets_rules() -> tuple[list[Rule], list[Rule]]:
    """detect-secrets' regex plugins but ``LEFT_OUT`` and assignment templates, as (marked
    rules, token rules). A plugin this module has no marks for is a token rule."""
    import detect_secrets.plugins as plugins
    from detect_secrets.plugins.base import RegexBasedDetector
    marked, tokens = [], []
    for module_info in sorted(pkgutil.iter_modules(plugins.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{plugins.__name__}.{module_info.name}")
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, RegexBasedDetector)
                    and value is not RegexBasedDetector and value.__module__ == module.__name__
                    and value.__name__ not in LEFT_OUT):
                continue
            marks = _PLUGIN_MARKS.get(value.__name__)
            for pattern in value.denylist:
                if pattern.pattern.startswith(_ASSIGNMENT_TEMPLATE):
                    continue
                rule = Rule("grouped" if pattern.groups else "whole", _scoped(pattern))
                if marks is None:
                    tokens.append(rule)
                elif pattern.flags & re.IGNORECASE and marks[1]:   # marks[1] begin a match
                    marked.append(dataclasses.replace(rule, folded=marks[1]))
                elif pattern.flags & re.IGNORECASE:
                    marked.append(dataclasses.replace(rule, anchored=False, folded=tuple(
                        mark.lower() for mark in marks[0])))
                else:
                    marked.append(dataclasses.replace(rule, exact=marks[0]))
    return marked, tokens


def _scoped(pattern: re.Pattern) -> str:
    """The pattern with its own flags, scoped to it (a whole-text flag would change others)."""
    flags = "".join(letter for flag, letter in ((re.IGNORECASE, "i"), (re.MULTILINE, "m"),
                                                (re.DOTALL, "s"), (re.VERBOSE, "x"))
                    if pattern.flags & flag)
    return f"(?{flags}:{pattern.pattern})" if flags else pattern.pattern


_DS_MARKED, _DS_TOKENS = _detect_secrets_rules()
RULES: tuple[Rule, ...] = (*_OURS, *_DS_MARKED)
TOKEN_RULES: tuple[Rule, ...] = (*_DS_TOKENS, _BARE_AWS)
# one pass over a token for all of them (none has groups of its own)
_TOKEN_REGEX = re.compile("|".join(f"(?P<t{i}>{rule.regex.pattern})"
                                   for i, rule in enumerate(TOKEN_RULES)))
# what every token rule's match holds: a run of 20 key characters, or Artifactory's AKC/AP
_TOKEN_RUN = re.compile(r"[A-Za-z0-9/+_\-]{20}|AKC|AP")
# each mark once, with the rules it wakes (by their place in RULES: the order they run in)
_EXACT: dict[str, list[int]] = {}
_FOLDED: dict[str, list[int]] = {}
for _i, _rule in enumerate(RULES):
    for _mark in _rule.exact:
        _EXACT.setdefault(_mark, []).append(_i)
    for _mark in _rule.folded:
        _FOLDED.setdefault(_mark, []).append(_i)
_ALWAYS = [i for i, rule in enumerate(RULES) if not rule.exact and not rule.folded]


def _collapse(index: dict[str, list[int]]) -> dict[str, list[int]]:
    """Fewer marks to look for: a mark that holds a shorter one ("glpat-" holds "gl") is
    looked for as the shorter (its rules then run a little more often; each is cheap)."""
    out: dict[str, list[int]] = {}
    for mark in sorted(index, key=len):
        shorter = next((m for m in out if m in mark), mark)
        out.setdefault(shorter, []).extend(index[mark])
    return out


_EXACT, _FOLDED = _collapse(_EXACT), _collapse(_FOLDED)


def redact(text: str) -> str:
    """``text`` with every recognised secret replaced by ``[REDACTED]``."""
    if not text:
        return text
    lowered = text.lower()
    woken = [i for mark, rules in _EXACT.items() if mark in text for i in rules]
    woken += [i for mark, rules in _FOLDED.items() if mark in lowered for i in rules]
    for i in sorted(set(woken + _ALWAYS)):
        redacted = RULES[i].apply(text, lowered)
        if redacted is not text:
            text, lowered = redacted, redacted.lower()
    for token in {t for t in text.split() if len(t) >= 11} if len(text) >= 11 else ():
        if (len(token) < MIN_TOKEN and "AKC" not in token and "AP" not in token) \
                or not _TOKEN_RUN.search(token):
            continue
        redacted = _TOKEN_REGEX.sub(_token_replace, token)
        if redacted != token:
            text = text.replace(token, redacted)
    return text


def _token_replace(match: re.Match) -> str:
    return TOKEN_RULES[int(match.lastgroup[1:])].replace(match)


def redact_value(value: Any) -> Any:
    """A JSON value with every string in it (keys kept) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value
