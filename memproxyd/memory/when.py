"""Time in a question: whether it asks *when*, and the days it names, resolved against the
time of the call; what a search uses to reorder its best hits (``rerank``).

    asked = Question.of("what did we decide last week?", now=time.time())
    asked.span            # (start, end) unix seconds: the seven days before this week's Monday
    Question.of("When did we move the cron job?").asks_when    # True

Two signals, each measured or reasoned where the issue left it open:
* A question that asks *when* ("when ...", "what day/date/year ...", "how long ago ...")
  is answered by a memory that says a time ("last Friday", "in 2022", "yesterday", "May 7"):
  such memories get ``WHEN_BOOST`` (chosen on the LoCoMo dev split, see the README).
* Days the question names -- "yesterday", "today", "last/this week|month|year", "in May",
  "in May 2023", "in 2023", "on Monday"/"last Monday", "3 days/weeks ago", and a day with its
  year ("on October 13, 2023", "3 June, 2023", "2023-06-03", give or take ``DAY_SLACK``
  for time zones) -- are resolved against the call's time (UTC days, weeks from Monday) to a
  span, and a memory whose ``created_at`` falls in it gets ``DATE_BOOST``. A month or weekday
  without a year or "last" is its most recent one (not in the future). Measured on the
  LoCoMo dev split with each turn stored at its session's time (``bench_recall.py
  --dated``, as an import keeps a transcript's times): 0.5 or 1.0 or 2.0 moved 1-3
  questions; 1.0 is the middle.
Both multiply the score, over the largest factor the question allows (so scores stay 0-1:
the best possible match of a "when" question also says a time), so they reorder the
question's own matches and never make a memory a hit by its date alone.
"""
from __future__ import annotations

import calendar
import functools
import re
import time
from datetime import datetime, timedelta, timezone

import attrs

WHEN_BOOST = 0.3          # a memory saying a time, for a question asking when
DATE_BOOST = 1.0          # a memory stored within the days the question names
DAY_SLACK = timedelta(days=1)     # a named day also takes in its neighbours (time zones)
POOL = 4                  # the ``POOL * limit`` best lexical hits are reordered

DAY = 86400.0
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
del _MONTHS["may"]        # "may" is a verb: the month only as "May" (below)
_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_MONTH_WORDS = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAY_WORDS = "|".join(_WEEKDAYS)

_ASKS_WHEN = re.compile(r"\bwhen\b|\bwhat (?:time|day|date|year|month)\b|\bhow long ago\b"
                        r"|\bsince when\b", re.IGNORECASE)
# Words that say a time: a memory holding one "says a time" (a word set, not one large regex:
# a hit's text is read on every "when" search, and the regex cost ~80 µs a memory).
_TIME_WORDS = frozenset({"yesterday", "today", "tonight", "tomorrow", "ago", "weekend",
                         "recently", "week", "weeks", "month", "months", "year", "years",
                         *_MONTHS, *_WEEKDAYS, *(f"{day}s" for day in _WEEKDAYS)})
_TOKEN = re.compile(r"[A-Za-z]+|\d{4}")
_MAY = re.compile(r"\bMay\b")        # case-sensitive: the month, not the verb
_AGO = re.compile(r"\b(\d+|a|an|one|two|three|four|five|six) (day|week|month|year)s? ago\b")
_RELATIVE = re.compile(r"\b(yesterday|today|(?:last|this|past) (?:week|month|year))\b")
_MONTH_IN = re.compile(rf"\b({_MONTH_WORDS}|may)(?:,? ((?:19|20)\d\d))?\b")
# a day with its year: "October 13, 2023", "13 October 2023", "3 June, 2023", "Oct 13th 2023"
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)? (?:of )?({_MONTH_WORDS}|may),? "
                             r"((?:19|20)\d\d)\b")
_MONTH_DAY_YEAR = re.compile(rf"\b({_MONTH_WORDS}|may) (\d{{1,2}})(?:st|nd|rd|th)?,? "
                             r"((?:19|20)\d\d)\b")
_ISO_DAY = re.compile(r"\b((?:19|20)\d\d)-(\d\d)-(\d\d)\b")
_YEAR_IN = re.compile(r"\b(?:in|during|of|since) ((?:19|20)\d\d)\b")
_WEEKDAY_ON = re.compile(rf"\b(?:on|last|this past) ({_WEEKDAY_WORDS})\b")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@attrs.frozen
class Question:
    asks_when: bool = False
    span: tuple[float, float] | None = None     # [start, end) unix seconds

    @property
    def timed(self) -> bool:
        return self.asks_when or self.span is not None

    @classmethod
    def of(cls, question: str, now: float | None = None) -> "Question":
        return cls(bool(_ASKS_WHEN.search(question)),
                   named_span(question, time.time() if now is None else now))


@functools.lru_cache(maxsize=65536)
def says_time(content: str) -> bool:
    """Whether a memory names a time (a day, a month, a year, "last week", "ago", ...)."""
    for token in _TOKEN.findall(content):
        if (token.lower() in _TIME_WORDS or token == "May"
                or (token.isdigit() and token[:2] in ("19", "20"))):
            return True
    return False


def named_span(question: str, now: float) -> tuple[float, float] | None:
    """The days the question names, resolved against ``now``; None when it names none."""
    today = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
    lower = question.lower()
    if m := _AGO.search(lower):
        n = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS[m.group(1)]
        unit = {"day": 1, "week": 7, "month": 30, "year": 365}[m.group(2)]
        centre = today - timedelta(days=n * unit)
        half = timedelta(days=max(1, unit // 2))
        return _seconds(centre - half, centre + half + timedelta(days=1))
    if m := _RELATIVE.search(lower):
        return _seconds(*_relative(m.group(1), today))
    if day := _named_day(lower):
        return _seconds(day - DAY_SLACK, day + timedelta(days=1) + DAY_SLACK)
    if (m := _MONTH_IN.search(lower)) and (m.group(1) != "may" or _MAY.search(question)):
        return _seconds(*_month(_MONTHS.get(m.group(1), 5), m.group(2), today))
    if m := _YEAR_IN.search(lower):
        year = int(m.group(1))
        return _seconds(datetime(year, 1, 1, tzinfo=timezone.utc),
                        datetime(year + 1, 1, 1, tzinfo=timezone.utc))
    if m := _WEEKDAY_ON.search(lower):
        back = (today.weekday() - _WEEKDAYS[m.group(1)]) % 7 or 7
        day = today - timedelta(days=back)
        return _seconds(day, day + timedelta(days=1))
    return None


def _named_day(lower: str) -> datetime | None:
    """The day a question names with its year ("on October 13, 2023"), or None."""
    if m := _ISO_DAY.search(lower):
        year, month, day = (int(g) for g in m.groups())
    elif m := _DAY_MONTH_YEAR.search(lower):
        day, month, year = int(m.group(1)), _MONTHS.get(m.group(2), 5), int(m.group(3))
    elif m := _MONTH_DAY_YEAR.search(lower):
        month, day, year = _MONTHS.get(m.group(1), 5), int(m.group(2)), int(m.group(3))
    else:
        return None
    try:
        return datetime(year, month, day, tzinfo=timezone.utc)
    except ValueError:           # "February 30, 2023": no such day
        return None


def _relative(phrase: str, today: datetime) -> tuple[datetime, datetime]:
    week = today - timedelta(days=today.weekday())
    month = today.replace(day=1)
    year = today.replace(month=1, day=1)
    tomorrow = today + timedelta(days=1)
    return {
        "yesterday": (today - timedelta(days=1), today),
        "today": (today, tomorrow),
        "last week": (week - timedelta(days=7), week),
        "this week": (week, tomorrow),
        "past week": (today - timedelta(days=7), tomorrow),
        "last month": ((month - timedelta(days=1)).replace(day=1), month),
        "this month": (month, tomorrow),
        "past month": (today - timedelta(days=31), tomorrow),
        "last year": (year.replace(year=year.year - 1), year),
        "this year": (year, tomorrow),
        "past year": (today - timedelta(days=365), tomorrow),
    }[phrase]


def _month(month: int, year: str | None, today: datetime) -> tuple[datetime, datetime]:
    """The named month of ``year``, else its most recent one (this one while in it)."""
    y = int(year) if year else today.year - (month > today.month)
    start = datetime(y, month, 1, tzinfo=timezone.utc)
    end = datetime(y + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def _seconds(start: datetime, end: datetime) -> tuple[float, float]:
    return start.timestamp(), end.timestamp()


def boost(question: Question, content: str, created_at: float) -> float:
    """The factor a memory's score is multiplied by for the question (1.0: none)."""
    factor = 1.0
    if question.asks_when and says_time(content):
        factor += WHEN_BOOST
    if question.span is not None and question.span[0] <= created_at < question.span[1]:
        factor += DATE_BOOST
    return factor


def rerank(question: Question, hits: list[tuple], limit: int) -> list[tuple]:
    """``hits`` (seq, score, stored fields or None: (id, content, metadata, created_at)),
    best first, with each score times its ``boost`` over the largest boost the question
    allows (the best possible match now also says a time, or was stored then: scores stay
    0-1), the ``limit`` best."""
    best = boost(question, "today", question.span[0] if question.span else 0.0)
    boosted = [(seq, score * boost(question, stored[1], stored[3]) / best, stored)
               if stored is not None else (seq, score / best, stored)
               for seq, score, stored in hits]
    boosted.sort(key=lambda hit: -hit[1])     # stable: ties keep the lexical order
    return boosted[:limit]
