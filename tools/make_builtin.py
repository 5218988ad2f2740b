"""Generate the built-in relation dataset, `ingest/data/builtin.jsonl`.

    python tools/make_builtin.py [--out PATH]      # write it
    python tools/make_builtin.py --check           # exit 1 unless the shipped file is identical

A development tool, not installed with the package: the wheel ships only the JSONL it writes.
The hand-typed tables live beside it in `tools/builtin/` (`*.txt`: one record per line, fields
split by `|`, `#` comments; `*.toml`: templates, names and aliases); this file holds the
grammar that turns them into facts.

Facts in six languages (en, de, fr, es, zh, ja). Names come from CLDR through `babel` where
CLDR has them (countries, currencies, languages, time-zone cities, weekdays, months) and are
typed in `tools/builtin/` otherwise (capitals, continents, landmarks, companies, elements,
antonyms). babel (pinned in the `dev` extra: CLDR data changes between its releases) is needed
only here, never by the runtime, which reads the committed JSONL.

Templates stop where the object starts. Where a language puts an article or a contracted
preposition before a name ("du Japon", "in der Schweiz", "the United States"), templates hold
slots such as `<de>` that are filled per fact from the article the name takes, so each prompt
is grammatical and the subject span is the bare name. When the object itself needs an article
after the template's last word (German "liegt in der Schweiz"), the object carries it and the
bare name is an alias.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LANGS = ("en", "de", "fr", "es", "zh", "ja")
DATA = Path(__file__).resolve().parent / "builtin"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "ingest" / "data" / "builtin.jsonl"


def _toml(name: str) -> dict:
    return tomllib.loads((DATA / name).read_text("utf-8"))


def _table(name: str) -> list[str]:
    """The records of a hand-typed table: its lines without comments and blank lines."""
    lines = (DATA / name).read_text("utf-8").splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")]


# Templates: relation → language → patterns ({subject} plus article slots).
TEMPLATES: dict[str, dict[str, list[str]]] = _toml("templates.toml")
# Names and aliases that CLDR lacks or words badly; nested by code, then language.
_COUNTRIES = _toml("countries.toml")
COUNTRY_NAME: dict[str, dict[str, str]] = _COUNTRIES["country_name"]
COUNTRY_ALIASES: dict[str, dict[str, list[str]]] = _COUNTRIES["country_aliases"]
CAPITAL_ALIASES: dict[str, dict[str, list[str]]] = _COUNTRIES["capital_aliases"]
CONTINENTS: dict[str, list[str]] = _COUNTRIES["continents"]  # region → names in LANGS order
CONTINENT_ALIASES: dict[str, dict[str, list[str]]] = _COUNTRIES["continent_aliases"]
COUNTRY_CONTINENT_ALSO: dict[str, str] = _COUNTRIES["country_continent_also"]
NO_CURRENCY: tuple[str, ...] = tuple(_COUNTRIES["no_currency"])
LANGUAGE_ALIASES: dict[str, dict[str, list[str]]] = _COUNTRIES["language_aliases"]
_CITIES = _toml("cities.toml")
CITY_ZONES: list[str] = _CITIES["zones"]
CITY_NAME: dict[str, dict[str, str]] = _CITIES["name"]
ANTONYM_ALIASES: dict[str, dict[str, list[str]]] = _toml("antonyms.toml")["aliases"]

# ---------------------------------------------------------------------------------------------
# Grammar: articles and the slots they fill


@dataclass(frozen=True)
class Name:
    """A localized name and the article it takes in its language ("" = none).

    en: "the"; de: "der" | "die" | "das" | "pl" (die, plural); fr: "la" | "le" | "l'" | "les"
    (or "v" for a bare word that elides "de" to "d'"); es: "el" | "la" | "los" | "las".
    """

    text: str
    article: str = ""


_ARTICLE_WORDS = {
    "en": ("the ",),
    "de": ("der ", "die ", "das "),
    "fr": ("la ", "le ", "les ", "l'"),
    "es": ("el ", "la ", "los ", "las "),
}


def parse_name(lang: str, text: str) -> Name:
    """ "der Eiffelturm" → Name("Eiffelturm", "der"); names are written with their article."""
    for word in _ARTICLE_WORDS.get(lang, ()):
        if text.startswith(word):
            return Name(text[len(word) :], word.strip())
    return Name(text)


def _cap(forms: dict[str, str]) -> dict[str, str]:
    return {k: v[:1].upper() + v[1:] for k, v in forms.items()}


_DE_VON = {"": "von ", "der": "vom ", "die": "von der ", "das": "vom ", "pl": "von den "}
_DE_IN = {"": "in ", "der": "im ", "die": "in der ", "das": "im ", "pl": "in den "}
_DE_NOM = {"": "", "der": "der ", "die": "die ", "das": "das ", "pl": "die "}
_FR_DE = {"": "de ", "v": "d'", "la": "de la ", "le": "du ", "l'": "de l'", "les": "des "}
_FR_EN = {"": "à ", "la": "en ", "le": "au ", "l'": "en ", "les": "aux "}
_FR_NOM = {"": "", "la": "la ", "le": "le ", "l'": "l'", "les": "les "}
_ES_DE = {"": "de ", "el": "del ", "la": "de la ", "los": "de los ", "las": "de las "}
_ES_EN = {"": "en ", "el": "en el ", "la": "en la ", "los": "en los ", "las": "en las "}
_ES_NOM = {"": "", "el": "el ", "la": "la ", "los": "los ", "las": "las "}


_ARTICLES = ("", "the", "der", "die", "das", "pl", "v", "la", "le", "l'", "les", "el", "los", "las")


def _verb(singular: str, plural: str, plural_articles: tuple[str, ...]) -> dict[str, str]:
    return {a: plural if a in plural_articles else singular for a in _ARTICLES}


# Slot → article → text. Verb slots agree with plural names ("Les États-Unis sont").
SLOTS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "<the>": {"": "", "the": "the "},
        "<The>": {"": "", "the": "The "},
    },
    "de": {
        "<von>": _DE_VON,
        "<in>": _DE_IN,
        "<In>": _cap(_DE_IN),
        "<der>": _DE_NOM,
        "<Der>": _cap(_DE_NOM),
        "<liegt>": _verb("liegt", "liegen", ("pl",)),
        "<befindet>": _verb("befindet", "befinden", ("pl",)),
    },
    "fr": {
        "<de>": _FR_DE,
        "<en>": _FR_EN,
        "<En>": _cap(_FR_EN),
        "<le>": _FR_NOM,
        "<Le>": _cap(_FR_NOM),
        "<est>": _verb("est", "sont", ("les",)),
        "<trouve>": _verb("trouve", "trouvent", ("les",)),
    },
    "es": {
        "<de>": _ES_DE,
        "<en>": _ES_EN,
        "<En>": _cap(_ES_EN),
        "<el>": _ES_NOM,
        "<El>": _cap(_ES_NOM),
        "<es>": _verb("es", "son", ("los", "las")),
        "<encuentra>": _verb("encuentra", "encuentran", ("los", "las")),
        "<está>": _verb("está", "están", ("los", "las")),
    },
}
_SLOT_RE = re.compile(r"<[^<>\s]+>")


def fill(template: str, lang: str, article: str) -> str:
    """Replace the article slots of a template pattern for a subject taking `article`."""

    def one(match: re.Match[str]) -> str:
        return SLOTS[lang][match.group(0)][article]

    return _SLOT_RE.sub(one, template)


# The form of a name that follows a template's last word (a preposition or "of"/"von"/"in").
_DE_DATIVE = {"": "", "der": "dem ", "die": "der ", "das": "dem ", "pl": "den "}


def object_form(lang: str, name: Name) -> tuple[str, tuple[str, ...]]:
    """(object, aliases): the name as it reads after the template, and the bare name."""
    if lang == "en" and name.article == "the":
        return f"the {name.text}", (name.text,)
    if lang == "de" and name.article:
        return f"{_DE_DATIVE[name.article]}{name.text}", (name.text,)
    # fr templates end in ":" before a country and es uses the bare name after "de"/"en".
    return name.text, ()


@dataclass(frozen=True)
class Country:
    code: str
    continent: str
    language: str
    names: dict[str, Name]  # lang → name with its article
    capital: dict[str, str] | None  # lang → capital


def countries() -> list[Country]:
    from babel import Locale

    locales = {lang: Locale.parse(lang) for lang in LANGS}
    result = []
    for line in _table("countries.txt"):
        code, continent, language, en, de, fr, es, capitals = line.split(maxsplit=7)
        articles = {"en": en, "de": de, "fr": fr, "es": es}
        names = {}
        for lang in LANGS:
            text = COUNTRY_NAME.get(code, {}).get(lang, locales[lang].territories[code])
            article = articles.get(lang, "-")
            names[lang] = Name(text, "" if article == "-" else article)
        capital = None if capitals == "-" else dict(zip(LANGS, capitals.split("|"), strict=True))
        result.append(Country(code, continent, language, names, capital))
    return result


def _country_object(country: Country, lang: str) -> tuple[str, list[str]]:
    obj, aliases = object_form(lang, country.names[lang])
    extra = COUNTRY_ALIASES.get(country.code, {}).get(lang, [])
    return obj, [*aliases, *extra]


# French words beginning with a mute h elide like vowels ("d'hiver"); aspirated ones do not.
_FR_MUTE_H = ("heureux", "hiver", "honnête")


def _fr_word_article(word: str) -> str:
    return "v" if word[:1] in "aeiouyéèêàâîôû" or word in _FR_MUTE_H else ""


# ---------------------------------------------------------------------------------------------
# Facts


@dataclass
class FactRow:
    relation: str
    language: str
    subject_id: str
    subject: str
    object: str
    aliases: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        row: dict[str, object] = {
            "relation": self.relation,
            "language": self.language,
            "subject_id": self.subject_id,
            "subject": self.subject,
            "object": self.object,
        }
        aliases = [a for a in dict.fromkeys(self.aliases) if a != self.object]
        if aliases:
            row["aliases"] = aliases
        row["templates"] = self.templates
        return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def _row(relation: str, lang: str, subject_id: str, subject: Name, obj: str, aliases) -> FactRow:
    templates = [fill(t, lang, subject.article) for t in TEMPLATES[relation][lang]]
    return FactRow(relation, lang, subject_id, subject.text, obj, list(aliases), templates)


def _last_word(text: str) -> str:
    return re.split(r"[\s\-]", text)[-1]


def currency_aliases(lang: str, name: str) -> list[str]:
    """The bare currency noun people say ("yen" for "Japanese Yen", "ドル" for "米ドル")."""
    if lang in ("en", "de"):
        word = _last_word(name)
        return [word.lower() if lang == "en" else word] if word != name else []
    if lang in ("fr", "es"):
        word = name.split()[0]
        return [word] if word != name else []
    if lang == "ja":
        for suffix in ("ドル", "ユーロ", "円", "ポンド", "元", "フラン", "ペソ", "ルピー"):
            if name.endswith(suffix) and name != suffix:
                return [suffix]
    return []


def facts() -> Iterator[FactRow]:
    """Every fact of the dataset, unsorted."""
    from babel import Locale

    locales = {lang: Locale.parse(lang) for lang in LANGS}
    all_countries = countries()
    by_code = {c.code: c for c in all_countries}
    for c in all_countries:
        for i, lang in enumerate(LANGS):
            yield from country_facts(c, i, lang, locales[lang])
    yield from city_facts(by_code)
    yield from table_facts(by_code)
    yield from antonym_facts()
    yield from calendar_facts(locales)


def country_facts(c: Country, i: int, lang: str, locale) -> Iterator[FactRow]:
    """Capital (both ways), currency, language and continent of a country in one language."""
    from babel.languages import get_official_languages
    from babel.numbers import get_territory_currencies

    cid, name = c.names["en"].text, c.names[lang]
    country_obj, country_aliases = _country_object(c, lang)
    if c.capital:
        capital = c.capital[lang]
        cap_aliases = CAPITAL_ALIASES.get(c.code, {}).get(lang, [])
        yield _row("country_capital", lang, cid, name, capital, cap_aliases)
        capital_id = c.capital["en"]
        yield _row("capital_country", lang, capital_id, Name(capital), country_obj, country_aliases)

    money = locale.currencies[get_territory_currencies(c.code)[0]]
    if lang == "ja":  # CLDR writes "スイス フラン" with a space no one types
        money_aliases = [money.split()[-1]] if " " in money else currency_aliases(lang, money)
        money = money.replace(" ", "")
    else:
        money_aliases = currency_aliases(lang, money)
    if c.code not in NO_CURRENCY:
        yield _row("country_currency", lang, cid, name, money, money_aliases)

    official = get_official_languages(c.code, de_facto=True)
    others = [code for code in official if code != c.language]
    speech = locale.languages[c.language]
    speech_aliases = [locale.languages[o] for o in others if o in locale.languages]
    speech_aliases += LANGUAGE_ALIASES.get(c.language, {}).get(lang, [])
    if lang == "en":  # "The main language of Greece is the Greek (language)" is right too
        speech_aliases.append(f"the {speech}")
    yield _row("country_language", lang, cid, name, speech, speech_aliases)

    continent = CONTINENTS[c.continent][i]
    cont_aliases = list(CONTINENT_ALIASES.get(c.continent, {}).get(lang, []))
    if c.code in COUNTRY_CONTINENT_ALSO:
        cont_aliases.append(CONTINENTS[COUNTRY_CONTINENT_ALSO[c.code]][i])
    yield _row("country_continent", lang, cid, name, continent, cont_aliases)


def city_facts(by_code: dict[str, Country]) -> Iterator[FactRow]:
    """city_country: CLDR's time-zone cities, then the handwritten ones."""
    import babel.core
    from babel.dates import get_timezone, get_timezone_location

    zone_territories = babel.core.get_global("zone_territories")
    for zone in CITY_ZONES:
        country = by_code[zone_territories[zone]]
        tz = get_timezone(zone)
        names = CITY_NAME.get(zone, {})
        city_en = names.get("en") or get_timezone_location(tz, "en", return_city=True)
        for lang in LANGS:
            city = names.get(lang) or get_timezone_location(tz, lang, return_city=True)
            obj, aliases = _country_object(country, lang)
            yield _row("city_country", lang, city_en, Name(city), obj, aliases)
    for line in _table("cities.txt"):
        code, *names = line.split("|")
        for lang, city in zip(LANGS, names, strict=True):
            obj, aliases = _country_object(by_code[code], lang)
            yield _row("city_country", lang, names[0], Name(city), obj, aliases)


def table_facts(by_code: dict[str, Country]) -> Iterator[FactRow]:
    """Landmarks and companies (their country) and elements (their symbol)."""
    for line in _table("landmarks.txt"):
        code, *names = line.split("|")
        landmark_id = parse_name("en", names[0]).text
        for lang, text in zip(LANGS, names, strict=True):
            obj, aliases = _country_object(by_code[code], lang)
            yield _row("landmark_country", lang, landmark_id, parse_name(lang, text), obj, aliases)

    for line in _table("companies.txt"):
        code, latin, zh, ja = line.split("|")
        for lang, text in zip(LANGS, [latin] * 4 + [zh, ja], strict=True):
            obj, aliases = _country_object(by_code[code], lang)
            yield _row("company_country", lang, latin, Name(text), obj, aliases)

    for line in _table("elements.txt"):
        symbol, *names = line.split("|")
        for lang, text in zip(LANGS, names, strict=True):
            yield _row("element_symbol", lang, names[0], Name(text), symbol, [])


def calendar_facts(locales: dict) -> Iterator[FactRow]:
    """weekday_next and month_next, from CLDR's wide day and month names."""
    en_days = locales["en"].days["format"]["wide"]  # 0 = Monday
    en_months = locales["en"].months["format"]["wide"]  # 1 = January
    for lang in LANGS:
        days = locales[lang].days["format"]["wide"]
        months = locales[lang].months["format"]["wide"]
        for d in range(7):
            yield _row("weekday_next", lang, en_days[d], Name(days[d]), days[(d + 1) % 7], [])
        for m in range(1, 13):
            nxt = m % 12 + 1
            yield _row("month_next", lang, en_months[m], Name(months[m]), months[nxt], [])


def antonym_facts() -> Iterator[FactRow]:
    """Both directions of each pair. A word that is in two pairs in some language (ja 遅い:
    slow and late) is one fact there, with the other antonym as an alias, so that no two facts
    share a prompt text (they could land in different splits)."""
    lines = [[cell.split("/") for cell in line.split("|")] for line in _table("antonyms.txt")]
    for i, lang in enumerate(LANGS):
        antonyms: dict[str, list[tuple[str, str]]] = {}  # word → [(its English id, antonym)]
        for pairs in lines:
            (en_a, en_b), (a, b) = pairs[0], pairs[i]
            antonyms.setdefault(a, []).append((en_a, b))
            antonyms.setdefault(b, []).append((en_b, a))
        for word, found in antonyms.items():
            subject_id, other = found[0]
            aliases = [more for _, more in found[1:]]
            for sid, _ in found:
                aliases += ANTONYM_ALIASES.get(sid, {}).get(lang, [])
            article = _fr_word_article(word) if lang == "fr" else ""
            yield _row("word_antonym", lang, subject_id, Name(word, article), other, aliases)


def check(rows: list[FactRow]) -> None:
    """Each (relation, language) has unique subject ids and texts; no object repeats its subject."""
    seen: dict[tuple[str, str, str], str] = {}
    for r in rows:
        for key in (
            (r.relation, r.language, "id:" + r.subject_id),
            (r.relation, r.language, r.subject),
        ):
            if key in seen:
                raise ValueError(f"duplicate subject {key} ({seen[key]} and {r.subject_id})")
            seen[key] = r.subject_id
        if r.object == r.subject:
            raise ValueError(f"{r.relation}/{r.language}: object repeats subject {r.subject!r}")
        if any(t.count("{subject}") != 1 or "<" in t for t in r.templates):
            raise ValueError(f"{r.relation}/{r.language}: bad template in {r.templates}")


def render() -> tuple[str, int]:
    """The dataset's JSONL text and its number of facts."""
    rows = sorted(facts(), key=lambda r: (r.relation, r.language, r.subject_id))
    check(rows)
    return "".join(r.to_json() + "\n" for r in rows), len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--check", action="store_true", help="compare with --out, write nothing; 1 if it differs"
    )
    args = parser.parse_args(argv)
    text, n = render()
    if args.check:
        if not args.out.is_file() or args.out.read_bytes() != text.encode("utf-8"):
            print(f"error: {args.out} is not what tools/make_builtin.py makes", file=sys.stderr)
            return 1
        print(f"{args.out}: the {n} facts the generator makes, byte for byte")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".jsonl.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {n} facts to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
