"""Generate the built-in relation dataset, `ingest/data/builtin.jsonl`.

    python -m warehouse.ingest.make_builtin [--out PATH]

Facts in six languages (en, de, fr, es, zh, ja). Names come from CLDR through `babel` where
CLDR has them (countries, currencies, languages, time-zone cities, weekdays, months) and are
written here otherwise (capitals, continents, landmarks, companies, elements, antonyms). babel is imported lazily: only this generator needs it, never the runtime, which
reads the committed JSONL.

Templates stop where the object starts. Where a language puts an article or a contracted
preposition before a name ("du Japon", "in der Schweiz", "the United States"), templates hold
slots such as `<de>` that are filled per fact from the article the name takes, so each prompt
is grammatical and the subject span is the bare name. When the object itself needs an article
after the template's last word (German "liegt in der Schweiz"), the object carries it and the
bare name is an alias.
"""

# The data tables below keep one record per line, wider than 100 columns where names are long.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LANGS = ("en", "de", "fr", "es", "zh", "ja")
DEFAULT_OUT = Path(__file__).parent / "data" / "builtin.jsonl"

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


# ---------------------------------------------------------------------------------------------
# Templates: relation → language → patterns ({subject} plus article slots)

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "country_capital": {
        "en": [
            "The capital of <the>{subject} is the city of",
            "The capital city of <the>{subject} is",
        ],
        "de": ["Die Hauptstadt <von>{subject} ist", "Die Hauptstadt <von>{subject} heißt"],
        "fr": ["La capitale <de>{subject} est", "La capitale <de>{subject} s'appelle"],
        "es": ["La capital <de>{subject} es", "La capital <de>{subject} se llama"],
        "zh": ["{subject}的首都是", "{subject}的首都城市是"],
        "ja": ["{subject}の首都は", "{subject}の首都の名前は"],
    },
    "capital_country": {
        "en": [
            "The country whose capital is {subject} is",
            "{subject} is the capital city of the country of",
        ],
        "de": ["{subject} ist die Hauptstadt von", "{subject} liegt in"],
        "fr": ["{subject} est la capitale du pays suivant :", "Capitale : {subject}. Pays :"],
        "es": ["{subject} es la capital de", "{subject} es la ciudad capital de"],
        "zh": ["{subject}是以下国家的首都：", "{subject}所在的国家是"],
        "ja": ["{subject}が首都である国は", "{subject}がある国は"],
    },
    "country_currency": {
        "en": [
            "The currency used in <the>{subject} is the",
            "The official currency of <the>{subject} is the",
        ],
        "de": ["Die Währung <von>{subject} heißt", "Die offizielle Währung <von>{subject} heißt"],
        "fr": ["Monnaie officielle <de>{subject} :", "Nom de la monnaie <de>{subject} :"],
        "es": ["La moneda <de>{subject} se llama", "La moneda oficial <de>{subject} se llama"],
        "zh": ["{subject}的货币是", "{subject}的官方货币是"],
        "ja": ["{subject}の通貨は", "{subject}の公式通貨は"],
    },
    "country_language": {
        "en": [
            "The main language of <the>{subject} is",
            "The official language of <the>{subject} is",
        ],
        "de": ["Die Amtssprache <von>{subject} ist", "<In>{subject} spricht man"],
        "fr": ["<En>{subject}, on parle", "Langue officielle <de>{subject} :"],
        "es": ["El idioma oficial <de>{subject} es el", "<En>{subject} se habla"],
        "zh": ["{subject}的官方语言是", "在{subject}，人们说"],
        "ja": ["{subject}の公用語は", "{subject}で話されている言語は"],
    },
    "country_continent": {
        "en": [
            "<The>{subject} is located on the continent of",
            "<The>{subject} is a country on the continent of",
        ],
        "de": ["Das Land {subject} liegt in", "Das Land {subject} gehört zum Kontinent"],
        "fr": ["<Le>{subject} <est> un pays d'", "<Le>{subject} se <trouve> en"],
        "es": ["<El>{subject} <es> un país de", "<El>{subject} se <encuentra> en"],
        "zh": ["{subject}位于", "{subject}所在的大洲是"],
        "ja": ["{subject}がある大陸は", "{subject}が位置する大陸は"],
    },
    "city_country": {
        "en": [
            "The city of {subject} is located in the country of",
            "The country where {subject} is located is",
        ],
        "de": ["{subject} ist eine Stadt in", "{subject} liegt in"],
        "fr": ["{subject} est une ville du pays suivant :", "Ville : {subject}. Pays :"],
        "es": ["{subject} es una ciudad de", "{subject} se encuentra en"],
        "zh": ["{subject}是一座城市，位于", "{subject}所在的国家是"],
        "ja": ["{subject}がある国は", "{subject}という都市がある国は"],
    },
    "landmark_country": {
        "en": [
            "<The>{subject} is located in the country of",
            "The country where <the>{subject} is located is",
        ],
        "de": ["<Der>{subject} <befindet> sich in", "<Der>{subject} <liegt> in"],
        "fr": [
            "<Le>{subject} se <trouve> dans le pays suivant :",
            "Pays où se trouve <le>{subject} :",
        ],
        "es": ["<El>{subject} se <encuentra> en", "<El>{subject} <está> en"],
        "zh": ["{subject}位于", "{subject}所在的国家是"],
        "ja": ["{subject}がある国は", "{subject}の所在国は"],
    },
    "company_country": {
        "en": ["The country where {subject} is headquartered is", "{subject} is a company from"],
        "de": [
            "Das Unternehmen {subject} stammt aus",
            "Das Unternehmen {subject} hat seinen Sitz in",
        ],
        "fr": [
            "Pays d'origine de l'entreprise {subject} :",
            "L'entreprise {subject} a son siège dans le pays suivant :",
        ],
        "es": ["{subject} es una empresa de", "La empresa {subject} tiene su sede en"],
        "zh": ["{subject}的总部位于", "{subject}的总部所在国家是"],
        "ja": ["{subject}の本社がある国は", "{subject}の本社所在国は"],
    },
    "element_symbol": {
        "en": ["The chemical symbol for {subject} is", "The chemical symbol of {subject} is"],
        "de": ["Das chemische Symbol für {subject} ist", "Das Elementsymbol von {subject} ist"],
        "fr": [
            "Le symbole chimique de l'élément {subject} est",
            "L'élément {subject} a pour symbole",
        ],
        "es": [
            "El símbolo químico del elemento {subject} es",
            "El elemento {subject} tiene como símbolo",
        ],
        "zh": ["{subject}的化学符号是", "化学元素{subject}的符号是"],
        "ja": ["{subject}の元素記号は", "元素{subject}の記号は"],
    },
    "word_antonym": {
        "en": ["The opposite of {subject} is", "The antonym of {subject} is"],
        "de": ["Das Gegenteil von {subject} ist", "Das Antonym von {subject} ist"],
        "fr": ["Le contraire <de>{subject} est", "L'antonyme <de>{subject} est"],
        "es": ["Lo contrario de {subject} es", "El antónimo de {subject} es"],
        "zh": ["{subject}的反义词是", "与{subject}意思相反的词是"],
        "ja": ["{subject}の反対語は", "{subject}の対義語は"],
    },
    # "If today is X, tomorrow is" is the phrasing SmolLM2 completes (57 % vs 0 % for "The
    # day after X is"); the other languages say the same, so the relation reads alike in all.
    "weekday_next": {
        "en": ["If today is {subject}, tomorrow will be", "Today is {subject} and tomorrow is"],
        "de": ["Wenn heute {subject} ist, ist morgen", "Der Tag nach {subject} ist der"],
        "fr": ["Si aujourd'hui c'est {subject}, demain c'est", "Le jour qui suit {subject} est"],
        "es": ["Si hoy es {subject}, mañana es", "El día después del {subject} es el"],
        "zh": ["如果今天是{subject}，那么明天是", "{subject}的后一天是"],
        "ja": ["今日が{subject}なら、明日は", "{subject}の次の日は"],
    },
    "month_next": {
        "en": [
            "If this month is {subject}, next month is",
            "If last month was {subject}, this month is",
        ],
        "de": [
            "Wenn wir {subject} haben, ist der nächste Monat",
            "Der Monat nach {subject} ist der",
        ],
        "fr": [
            "Si nous sommes en {subject}, le mois prochain est",
            "Le mois qui suit {subject} est",
        ],
        "es": ["Si estamos en {subject}, el próximo mes es", "El mes después de {subject} es"],
        "zh": ["如果这个月是{subject}，那么下个月是", "{subject}的下一个月是"],
        "ja": ["今月が{subject}なら、来月は", "{subject}の次の月は"],
    },
}


# ---------------------------------------------------------------------------------------------
# Countries: code, continent (CLDR region), primary official language, articles (en de fr es),
# capital in en|de|fr|es|zh|ja ("-": no capital fact, e.g. a city-state). Country names come
# from CLDR. Only countries a small model may know; none whose capital is contested or shares
# the country's name in some language (Tunis/Túnez, Singapore).

COUNTRY_TABLE = """
FR 150 fr  - -  la  - Paris|Paris|Paris|París|巴黎|パリ
DE 150 de  - -  l'  - Berlin|Berlin|Berlin|Berlín|柏林|ベルリン
IT 150 it  - -  l'  - Rome|Rom|Rome|Roma|罗马|ローマ
ES 150 es  - -  l'  - Madrid|Madrid|Madrid|Madrid|马德里|マドリード
PT 150 pt  - -  le  - Lisbon|Lissabon|Lisbonne|Lisboa|里斯本|リスボン
GB 150 en  the - le el London|London|Londres|Londres|伦敦|ロンドン
IE 150 en  - -  l'  - Dublin|Dublin|Dublin|Dublín|都柏林|ダブリン
NL 150 nl  the pl les los Amsterdam|Amsterdam|Amsterdam|Ámsterdam|阿姆斯特丹|アムステルダム
BE 150 nl  - -  la  - Brussels|Brüssel|Bruxelles|Bruselas|布鲁塞尔|ブリュッセル
CH 150 de  - die la - Bern|Bern|Berne|Berna|伯尔尼|ベルン
AT 150 de  - -  l'  - Vienna|Wien|Vienne|Viena|维也纳|ウィーン
SE 150 sv  - -  la  - Stockholm|Stockholm|Stockholm|Estocolmo|斯德哥尔摩|ストックホルム
NO 150 no  - -  la  - Oslo|Oslo|Oslo|Oslo|奥斯陆|オスロ
DK 150 da  - -  le  - Copenhagen|Kopenhagen|Copenhague|Copenhague|哥本哈根|コペンハーゲン
FI 150 fi  - -  la  - Helsinki|Helsinki|Helsinki|Helsinki|赫尔辛基|ヘルシンキ
IS 150 is  - -  l'  - Reykjavik|Reykjavík|Reykjavik|Reikiavik|雷克雅未克|レイキャビク
PL 150 pl  - -  la  - Warsaw|Warschau|Varsovie|Varsovia|华沙|ワルシャワ
CZ 150 cs  the - la - Prague|Prag|Prague|Praga|布拉格|プラハ
HU 150 hu  - -  la  - Budapest|Budapest|Budapest|Budapest|布达佩斯|ブダペスト
GR 150 el  - -  la  - Athens|Athen|Athènes|Atenas|雅典|アテネ
RU 150 ru  - -  la  - Moscow|Moskau|Moscou|Moscú|莫斯科|モスクワ
UA 150 uk  - die l' - Kyiv|Kiew|Kiev|Kiev|基辅|キーウ
RO 150 ro  - -  la  - Bucharest|Bukarest|Bucarest|Bucarest|布加勒斯特|ブカレスト
BG 150 bg  - -  la  - Sofia|Sofia|Sofia|Sofía|索非亚|ソフィア
HR 150 hr  - -  la  - Zagreb|Zagreb|Zagreb|Zagreb|萨格勒布|ザグレブ
RS 150 sr  - -  la  - Belgrade|Belgrad|Belgrade|Belgrado|贝尔格莱德|ベオグラード
SK 150 sk  - die la - Bratislava|Bratislava|Bratislava|Bratislava|布拉迪斯拉发|ブラチスラバ
SI 150 sl  - -  la  - Ljubljana|Ljubljana|Ljubljana|Liubliana|卢布尔雅那|リュブリャナ
LT 150 lt  - -  la  - Vilnius|Vilnius|Vilnius|Vilna|维尔纽斯|ビリニュス
LV 150 lv  - -  la  - Riga|Riga|Riga|Riga|里加|リガ
EE 150 et  - -  l'  - Tallinn|Tallinn|Tallinn|Tallin|塔林|タリン
AL 150 sq  - -  l'  - Tirana|Tirana|Tirana|Tirana|地拉那|ティラナ
BY 150 be  - -  la  - Minsk|Minsk|Minsk|Minsk|明斯克|ミンスク
MT 150 mt  - -  -   - Valletta|Valletta|La Valette|La Valeta|瓦莱塔|バレッタ
BA 150 bs  - -  la  - Sarajevo|Sarajevo|Sarajevo|Sarajevo|萨拉热窝|サラエボ
MK 150 mk  - -  la  - Skopje|Skopje|Skopje|Skopie|斯科普里|スコピエ
MD 150 ro  - -  la  - Chișinău|Chișinău|Chișinău|Chisináu|基希讷乌|キシナウ
LI 150 de  - -  le  - Vaduz|Vaduz|Vaduz|Vaduz|瓦杜兹|ファドゥーツ
TR 142 tr  - die la - Ankara|Ankara|Ankara|Ankara|安卡拉|アンカラ
JP 142 ja  - -  le  - Tokyo|Tokio|Tokyo|Tokio|东京|東京
CN 142 zh  - -  la  - Beijing|Peking|Pékin|Pekín|北京|北京
KR 142 ko  - -  la  - Seoul|Seoul|Séoul|Seúl|首尔|ソウル
IN 142 hi  - -  l'  - New Delhi|Neu-Delhi|New Delhi|Nueva Delhi|新德里|ニューデリー
PK 142 ur  - -  le  - Islamabad|Islamabad|Islamabad|Islamabad|伊斯兰堡|イスラマバード
BD 142 bn  - -  le  - Dhaka|Dhaka|Dacca|Daca|达卡|ダッカ
ID 142 id  - -  l'  - Jakarta|Jakarta|Jakarta|Yakarta|雅加达|ジャカルタ
TH 142 th  - -  la  - Bangkok|Bangkok|Bangkok|Bangkok|曼谷|バンコク
VN 142 vi  - -  le  - Hanoi|Hanoi|Hanoï|Hanói|河内|ハノイ
PH 142 fil the pl les - Manila|Manila|Manille|Manila|马尼拉|マニラ
MY 142 ms  - -  la  - Kuala Lumpur|Kuala Lumpur|Kuala Lumpur|Kuala Lumpur|吉隆坡|クアラルンプール
IR 142 fa  - der l' - Tehran|Teheran|Téhéran|Teherán|德黑兰|テヘラン
IQ 142 ar  - der l' - Baghdad|Bagdad|Bagdad|Bagdad|巴格达|バグダッド
SA 142 ar  - -  l'  - Riyadh|Riad|Riyad|Riad|利雅得|リヤド
AF 142 fa  - -  l'  - Kabul|Kabul|Kaboul|Kabul|喀布尔|カブール
NP 142 ne  - -  le  - Kathmandu|Kathmandu|Katmandou|Katmandú|加德满都|カトマンズ
MN 142 mn  - die la - Ulaanbaatar|Ulaanbaatar|Oulan-Bator|Ulán Bator|乌兰巴托|ウランバートル
KZ 142 kk  - -  le  - Astana|Astana|Astana|Astaná|阿斯塔纳|アスタナ
UZ 142 uz  - -  l'  - Tashkent|Taschkent|Tachkent|Taskent|塔什干|タシケント
SY 142 ar  - -  la  - Damascus|Damaskus|Damas|Damasco|大马士革|ダマスカス
JO 142 ar  - -  la  - Amman|Amman|Amman|Amán|安曼|アンマン
LB 142 ar  - der le - Beirut|Beirut|Beyrouth|Beirut|贝鲁特|ベイルート
QA 142 ar  - -  le  - Doha|Doha|Doha|Doha|多哈|ドーハ
KP 142 ko  - -  la  - Pyongyang|Pjöngjang|Pyongyang|Pionyang|平壤|平壌
KH 142 km  - -  le  - Phnom Penh|Phnom Penh|Phnom Penh|Nom Pen|金边|プノンペン
SG 142 en  - -  -   - -
AM 142 hy  - -  l'  - Yerevan|Jerewan|Erevan|Ereván|埃里温|エレバン
AZ 142 az  - -  l'  - Baku|Baku|Bakou|Bakú|巴库|バクー
CY 142 el  - -  -   - Nicosia|Nikosia|Nicosie|Nicosia|尼科西亚|ニコシア
LA 142 lo  - -  le  - Vientiane|Vientiane|Vientiane|Vientián|万象|ビエンチャン
KG 142 ky  - -  le  - Bishkek|Bischkek|Bichkek|Biskek|比什凯克|ビシュケク
TJ 142 tg  - -  le  - Dushanbe|Duschanbe|Douchanbé|Dusambé|杜尚别|ドゥシャンベ
EG 002 ar  - -  l'  - Cairo|Kairo|Le Caire|El Cairo|开罗|カイロ
NG 002 en  - -  le  - Abuja|Abuja|Abuja|Abuya|阿布贾|アブジャ
KE 002 sw  - -  le  - Nairobi|Nairobi|Nairobi|Nairobi|内罗毕|ナイロビ
ET 002 am  - -  l'  - Addis Ababa|Addis Abeba|Addis-Abeba|Adís Abeba|亚的斯亚贝巴|アディスアベバ
MA 002 ar  - -  le  - Rabat|Rabat|Rabat|Rabat|拉巴特|ラバト
DZ 002 ar  - -  l'  - Algiers|Algier|Alger|Argel|阿尔及尔|アルジェ
GH 002 en  - -  le  - Accra|Accra|Accra|Acra|阿克拉|アクラ
SN 002 fr  - -  le  - Dakar|Dakar|Dakar|Dakar|达喀尔|ダカール
UG 002 en  - -  l'  - Kampala|Kampala|Kampala|Kampala|坎帕拉|カンパラ
SD 002 ar  - der le - Khartoum|Khartum|Khartoum|Jartum|喀土穆|ハルツーム
LY 002 ar  - -  la  - Tripoli|Tripolis|Tripoli|Trípoli|的黎波里|トリポリ
ZW 002 en  - -  le  - Harare|Harare|Harare|Harare|哈拉雷|ハラレ
AO 002 pt  - -  l'  - Luanda|Luanda|Luanda|Luanda|罗安达|ルアンダ
CM 002 fr  - -  le  - Yaoundé|Yaoundé|Yaoundé|Yaundé|雅温得|ヤウンデ
TZ 002 sw  - -  la  - Dodoma|Dodoma|Dodoma|Dodoma|多多马|ドドマ
ZA 002 en  - -  l'  - -
ZM 002 en  - -  la  - Lusaka|Lusaka|Lusaka|Lusaka|卢萨卡|ルサカ
MZ 002 pt  - -  le  - Maputo|Maputo|Maputo|Maputo|马普托|マプト
MG 002 mg  - -  -   - Antananarivo|Antananarivo|Antananarivo|Antananarivo|塔那那利佛|アンタナナリボ
RW 002 rw  - -  le  - Kigali|Kigali|Kigali|Kigali|基加利|キガリ
SO 002 so  - -  la  - Mogadishu|Mogadischu|Mogadiscio|Mogadiscio|摩加迪沙|モガディシュ
BW 002 tn  - -  le  - Gaborone|Gaborone|Gaborone|Gaborone|哈博罗内|ハボローネ
LR 002 en  - -  le  - Monrovia|Monrovia|Monrovia|Monrovia|蒙罗维亚|モンロビア
US 003 en  the pl les - Washington, D.C.|Washington, D.C.|Washington|Washington D. C.|华盛顿|ワシントンD.C.
CA 003 en  - -  le  - Ottawa|Ottawa|Ottawa|Ottawa|渥太华|オタワ
MX 003 es  - -  le  - Mexico City|Mexiko-Stadt|Mexico|Ciudad de México|墨西哥城|メキシコシティ
CU 003 es  - -  -   - Havana|Havanna|La Havane|La Habana|哈瓦那|ハバナ
JM 003 en  - -  la  - Kingston|Kingston|Kingston|Kingston|金斯敦|キングストン
HN 003 es  - -  le  - Tegucigalpa|Tegucigalpa|Tegucigalpa|Tegucigalpa|特古西加尔巴|テグシガルパ
CR 003 es  - -  le  - San José|San José|San José|San José|圣何塞|サンホセ
BR 005 pt  - -  le  - Brasília|Brasília|Brasilia|Brasilia|巴西利亚|ブラジリア
AR 005 es  - -  l'  - Buenos Aires|Buenos Aires|Buenos Aires|Buenos Aires|布宜诺斯艾利斯|ブエノスアイレス
CL 005 es  - -  le  - Santiago|Santiago de Chile|Santiago|Santiago de Chile|圣地亚哥|サンティアゴ
PE 005 es  - -  le  - Lima|Lima|Lima|Lima|利马|リマ
CO 005 es  - -  la  - Bogotá|Bogotá|Bogota|Bogotá|波哥大|ボゴタ
VE 005 es  - -  le  - Caracas|Caracas|Caracas|Caracas|加拉加斯|カラカス
EC 005 es  - -  l'  - Quito|Quito|Quito|Quito|基多|キト
UY 005 es  - -  l'  - Montevideo|Montevideo|Montevideo|Montevideo|蒙得维的亚|モンテビデオ
PY 005 es  - -  le  - Asunción|Asunción|Asuncion|Asunción|亚松森|アスンシオン
AU 009 en  - -  l'  - Canberra|Canberra|Canberra|Canberra|堪培拉|キャンベラ
NZ 009 en  - -  la  - Wellington|Wellington|Wellington|Wellington|惠灵顿|ウェリントン
FJ 009 en  - -  les - Suva|Suva|Suva|Suva|苏瓦|スバ
PG 009 en  - -  la  - Port Moresby|Port Moresby|Port Moresby|Puerto Moresby|莫尔兹比港|ポートモレスビー
"""

# Country names where CLDR's choice reads badly in prompts, or is not what people say.
COUNTRY_NAME = {
    ("US", "de"): "USA",  # "Vereinigte Staaten" inflects after prepositions (den Vereinigten)
    ("US", "ja"): "アメリカ",
    ("GB", "de"): "Großbritannien",  # "Vereinigtes Königreich" inflects likewise
    ("CZ", "en"): "Czech Republic",
    ("TR", "en"): "Turkey",
    ("VN", "fr"): "Vietnam",
    ("BA", "en"): "Bosnia and Herzegovina",  # CLDR writes "Bosnia & Herzegovina"
    ("MD", "de"): "Moldawien",  # "Republik Moldau" reads "Das Land Republik Moldau"
}
COUNTRY_ALIASES: dict[str, dict[str, list[str]]] = {
    "US": {
        "en": ["United States of America", "USA", "US", "America", "the US", "the USA"],
        "de": ["Vereinigte Staaten", "Vereinigten Staaten", "Amerika"],
        "fr": ["Amérique", "les États-Unis"],
        "es": ["EE. UU.", "EEUU", "América", "los Estados Unidos"],
        "zh": ["美利坚合众国"],
        "ja": ["アメリカ合衆国", "米国"],
    },
    "GB": {
        "en": ["UK", "Britain", "Great Britain", "England", "the UK"],
        "de": ["Vereinigtes Königreich", "England", "UK"],
        "fr": ["Angleterre", "Grande-Bretagne", "le Royaume-Uni"],
        "es": ["Inglaterra", "Gran Bretaña", "el Reino Unido"],
        "zh": ["英格兰", "大不列颠"],
        "ja": ["英国", "イングランド"],
    },
    "NL": {"en": ["Holland"], "de": ["Holland"], "fr": ["Hollande"], "es": ["Holanda"]},
    "CZ": {"en": ["Czechia"], "fr": ["République tchèque"], "es": ["República Checa"]},
    "TR": {"en": ["Türkiye"]},
    "KR": {"en": ["Korea"], "de": ["Korea"], "fr": ["Corée"], "es": ["Corea"], "ja": ["大韓民国"]},
    "VN": {"fr": ["Viêt Nam"]},
    "CN": {"zh": ["中华人民共和国"]},
    "BA": {"en": ["Bosnia"], "de": ["Bosnien"], "fr": ["Bosnie"], "es": ["Bosnia"]},
    "MD": {"en": ["Moldavia"], "de": ["Republik Moldau", "Moldau"]},
    "MK": {"en": ["Macedonia"], "de": ["Mazedonien"], "fr": ["Macédoine"], "es": ["Macedonia"]},
    "BY": {"de": ["Weißrussland"]},
}
CAPITAL_ALIASES: dict[str, dict[str, list[str]]] = {
    "US": {"en": ["Washington"], "de": ["Washington"], "es": ["Washington"], "ja": ["ワシントン"]},
    "CN": {"en": ["Peking"], "de": ["Beijing"], "fr": ["Beijing"], "es": ["Pekín", "Beijing"]},
    "UA": {"en": ["Kiev"], "fr": ["Kyiv"], "es": ["Kyiv"], "ja": ["キエフ"]},
    "IN": {"en": ["Delhi"], "de": ["Delhi"], "fr": ["Delhi"], "es": ["Delhi"], "zh": ["德里"]},
    "BR": {"en": ["Brasilia"]},
    "CO": {"en": ["Bogota"]},
    "MN": {"en": ["Ulan Bator"], "de": ["Ulan Bator"]},
    "CL": {"de": ["Santiago"], "es": ["Santiago"]},
    "MX": {"de": ["Mexiko"], "es": ["México"]},
    "PY": {"en": ["Asuncion"]},
    "CR": {"en": ["San Jose"]},
    "CM": {"en": ["Yaounde"]},
    "IS": {"en": ["Reykjavík"]},
    "MD": {"en": ["Chisinau"], "de": ["Chisinau"], "fr": ["Chisinau"], "es": ["Chisinau"]},
}
CONTINENTS = {
    "150": ["Europe", "Europa", "Europe", "Europa", "欧洲", "ヨーロッパ"],
    "142": ["Asia", "Asien", "Asie", "Asia", "亚洲", "アジア"],
    "002": ["Africa", "Afrika", "Afrique", "África", "非洲", "アフリカ"],
    "003": [
        "North America",
        "Nordamerika",
        "Amérique du Nord",
        "América del Norte",
        "北美洲",
        "北アメリカ",
    ],
    "005": [
        "South America",
        "Südamerika",
        "Amérique du Sud",
        "América del Sur",
        "南美洲",
        "南アメリカ",
    ],
    "009": ["Oceania", "Ozeanien", "Océanie", "Oceanía", "大洋洲", "オセアニア"],
}
CONTINENT_ALIASES = {
    "003": {"es": ["Norteamérica"], "zh": ["北美"], "ja": ["北米"]},
    "005": {"es": ["Sudamérica", "Suramérica"], "zh": ["南美"], "ja": ["南米"]},
    "009": {"en": ["Australia"], "de": ["Australien"]},
}
# Countries spanning two continents: the other one is also right.
COUNTRY_CONTINENT_ALSO = {
    **{"TR": "150", "RU": "142", "EG": "142", "KZ": "150"},
    **{"AM": "150", "AZ": "150", "CY": "150"},  # the Caucasus and Cyprus are counted either way
}
# Countries without a currency fact: Zimbabwe's is in flux (USD and ZiG); CLDR's Japanese name
# of Bosnia's convertible mark ends in "(BAM)".
NO_CURRENCY = ("ZW", "BA")
# Language names people use besides CLDR's.
LANGUAGE_ALIASES = {
    ("zh", "en"): ["Mandarin", "Mandarin Chinese"],
    ("zh", "zh"): ["汉语", "普通话", "中国话"],
    ("fa", "en"): ["Farsi", "Dari"],
    ("fil", "en"): ["Tagalog"],
    ("ms", "en"): ["Malaysian"],
    ("lo", "en"): ["Laotian"],
}


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
    for line in COUNTRY_TABLE.strip().splitlines():
        code, continent, language, en, de, fr, es, capitals = line.split(maxsplit=7)
        articles = {"en": en, "de": de, "fr": fr, "es": es}
        names = {}
        for lang in LANGS:
            text = COUNTRY_NAME.get((code, lang), locales[lang].territories[code])
            article = articles.get(lang, "-")
            names[lang] = Name(text, "" if article == "-" else article)
        capital = None if capitals == "-" else dict(zip(LANGS, capitals.split("|"), strict=True))
        result.append(Country(code, continent, language, names, capital))
    return result


def _country_object(country: Country, lang: str) -> tuple[str, list[str]]:
    obj, aliases = object_form(lang, country.names[lang])
    extra = COUNTRY_ALIASES.get(country.code, {}).get(lang, [])
    return obj, [*aliases, *extra]


# ---------------------------------------------------------------------------------------------
# Landmarks and companies (handwritten; names carry their article: "der Eiffelturm")

LANDMARKS = """
FR|the Eiffel Tower|der Eiffelturm|la tour Eiffel|la Torre Eiffel|埃菲尔铁塔|エッフェル塔
FR|the Louvre|der Louvre|le Louvre|el Louvre|卢浮宫|ルーヴル美術館
FR|the Palace of Versailles|das Schloss Versailles|le château de Versailles|el Palacio de Versalles|凡尔赛宫|ヴェルサイユ宮殿
FR|Notre-Dame de Paris|Notre-Dame de Paris|Notre-Dame de Paris|Notre-Dame de París|巴黎圣母院|ノートルダム大聖堂
FR|Mont-Saint-Michel|der Mont-Saint-Michel|le Mont-Saint-Michel|el Monte Saint-Michel|圣米歇尔山|モン・サン＝ミシェル
US|the Statue of Liberty|die Freiheitsstatue|la statue de la Liberté|la Estatua de la Libertad|自由女神像|自由の女神像
US|the Golden Gate Bridge|die Golden Gate Bridge|le Golden Gate Bridge|el puente Golden Gate|金门大桥|ゴールデンゲートブリッジ
US|the Grand Canyon|der Grand Canyon|le Grand Canyon|el Gran Cañón|科罗拉多大峡谷|グランドキャニオン
US|the Empire State Building|das Empire State Building|l'Empire State Building|el Empire State Building|帝国大厦|エンパイア・ステート・ビルディング
US|Mount Rushmore|der Mount Rushmore|le mont Rushmore|el monte Rushmore|拉什莫尔山|ラシュモア山
US|the White House|das Weiße Haus|la Maison-Blanche|la Casa Blanca|白宫|ホワイトハウス
US|Times Square|der Times Square|Times Square|Times Square|时代广场|タイムズスクエア
GB|Big Ben|Big Ben|Big Ben|el Big Ben|大本钟|ビッグ・ベン
GB|Buckingham Palace|der Buckingham Palace|le palais de Buckingham|el palacio de Buckingham|白金汉宫|バッキンガム宮殿
GB|Stonehenge|Stonehenge|Stonehenge|Stonehenge|巨石阵|ストーンヘンジ
GB|the Tower of London|der Tower of London|la tour de Londres|la Torre de Londres|伦敦塔|ロンドン塔
IT|the Colosseum|das Kolosseum|le Colisée|el Coliseo|罗马斗兽场|コロッセオ
IT|the Leaning Tower of Pisa|der Schiefe Turm von Pisa|la tour de Pise|la torre de Pisa|比萨斜塔|ピサの斜塔
IT|the Trevi Fountain|der Trevi-Brunnen|la fontaine de Trevi|la Fontana de Trevi|特雷维喷泉|トレヴィの泉
IT|Pompeii|Pompeji|Pompéi|Pompeya|庞贝古城|ポンペイ
ES|the Sagrada Família|die Sagrada Família|la Sagrada Família|la Sagrada Familia|圣家堂|サグラダ・ファミリア
ES|the Alhambra|die Alhambra|l'Alhambra|la Alhambra|阿尔罕布拉宫|アルハンブラ宮殿
ES|the Prado Museum|der Prado|le musée du Prado|el Museo del Prado|普拉多博物馆|プラド美術館
DE|the Brandenburg Gate|das Brandenburger Tor|la porte de Brandebourg|la Puerta de Brandeburgo|勃兰登堡门|ブランデンブルク門
DE|Neuschwanstein Castle|Schloss Neuschwanstein|le château de Neuschwanstein|el castillo de Neuschwanstein|新天鹅堡|ノイシュヴァンシュタイン城
DE|Cologne Cathedral|der Kölner Dom|la cathédrale de Cologne|la catedral de Colonia|科隆大教堂|ケルン大聖堂
GR|the Acropolis|die Akropolis|l'Acropole|la Acrópolis|雅典卫城|アクロポリス
GR|the Parthenon|der Parthenon|le Parthénon|el Partenón|帕特农神庙|パルテノン神殿
GR|Mount Olympus|der Olymp|le mont Olympe|el monte Olimpo|奥林匹斯山|オリンポス山
GR|Santorini|Santorini|Santorin|Santorini|圣托里尼|サントリーニ島
CN|the Great Wall|die Chinesische Mauer|la Grande Muraille|la Gran Muralla|长城|万里の長城
CN|the Forbidden City|die Verbotene Stadt|la Cité interdite|la Ciudad Prohibida|紫禁城|紫禁城
CN|the Terracotta Army|die Terrakotta-Armee|l'armée de terre cuite|el Ejército de terracota|兵马俑|兵馬俑
CN|the Potala Palace|der Potala-Palast|le palais du Potala|el Palacio de Potala|布达拉宫|ポタラ宮
IN|the Taj Mahal|das Taj Mahal|le Taj Mahal|el Taj Mahal|泰姬陵|タージ・マハル
IN|the Red Fort|das Rote Fort|le Fort rouge|el Fuerte Rojo|红堡|ラール・キラー
IN|the Golden Temple|der Goldene Tempel|le Temple d'or|el Templo Dorado|金庙|黄金寺院
JP|Mount Fuji|der Fuji|le mont Fuji|el monte Fuji|富士山|富士山
JP|Tokyo Tower|der Tokyo Tower|la tour de Tokyo|la Torre de Tokio|东京塔|東京タワー
JP|Himeji Castle|die Burg Himeji|le château de Himeji|el castillo de Himeji|姬路城|姫路城
JP|Fushimi Inari Shrine|der Fushimi-Inari-Taisha|le Fushimi Inari-taisha|el santuario Fushimi Inari|伏见稻荷大社|伏見稲荷大社
RU|the Kremlin|der Kreml|le Kremlin|el Kremlin|克里姆林宫|クレムリン
RU|Red Square|der Rote Platz|la place Rouge|la Plaza Roja|红场|赤の広場
RU|Saint Basil's Cathedral|die Basilius-Kathedrale|la cathédrale Saint-Basile|la catedral de San Basilio|圣瓦西里大教堂|聖ワシリイ大聖堂
RU|the Hermitage Museum|die Eremitage|l'Ermitage|el Museo del Hermitage|埃尔米塔日博物馆|エルミタージュ美術館
AU|the Sydney Opera House|das Opernhaus von Sydney|l'opéra de Sydney|la Ópera de Sídney|悉尼歌剧院|シドニー・オペラハウス
AU|Uluru|der Uluru|Uluru|el Uluru|乌鲁鲁|ウルル
AU|the Great Barrier Reef|das Great Barrier Reef|la Grande Barrière de corail|la Gran Barrera de Coral|大堡礁|グレート・バリア・リーフ
PE|Machu Picchu|Machu Picchu|le Machu Picchu|el Machu Picchu|马丘比丘|マチュ・ピチュ
BR|Christ the Redeemer|der Cristo Redentor|le Christ Rédempteur|el Cristo Redentor|救世基督像|コルコバードのキリスト像
BR|Sugarloaf Mountain|der Zuckerhut|le Pain de Sucre|el Pan de Azúcar|面包山|ポン・ジ・アスーカル
MX|Chichen Itza|Chichén Itzá|Chichén Itzá|Chichén Itzá|奇琴伊察|チチェン・イッツァ
MX|Teotihuacan|Teotihuacán|Teotihuacan|Teotihuacán|特奥蒂瓦坎|テオティワカン
EG|the Great Pyramid of Giza|die Cheops-Pyramide|la pyramide de Khéops|la Gran Pirámide de Guiza|胡夫金字塔|クフ王のピラミッド
EG|the Great Sphinx of Giza|die Sphinx von Gizeh|le Sphinx de Gizeh|la Gran Esfinge de Guiza|狮身人面像|ギザの大スフィンクス
EG|Abu Simbel|Abu Simbel|Abou Simbel|Abu Simbel|阿布辛贝神庙|アブ・シンベル神殿
JO|Petra|Petra|Pétra|Petra|佩特拉|ペトラ
TR|the Hagia Sophia|die Hagia Sophia|Sainte-Sophie|Santa Sofía|圣索菲亚大教堂|アヤソフィア
TR|the Blue Mosque|die Blaue Moschee|la Mosquée bleue|la Mezquita Azul|蓝色清真寺|ブルーモスク
TR|Cappadocia|Kappadokien|la Cappadoce|Capadocia|卡帕多奇亚|カッパドキア
KH|Angkor Wat|Angkor Wat|Angkor Vat|Angkor Wat|吴哥窟|アンコール・ワット
VN|Ha Long Bay|die Halong-Bucht|la baie d'Along|la bahía de Ha Long|下龙湾|ハロン湾
ID|Borobudur|Borobudur|Borobudur|Borobudur|婆罗浮屠|ボロブドゥール
SG|Marina Bay Sands|das Marina Bay Sands|le Marina Bay Sands|el Marina Bay Sands|滨海湾金沙|マリーナベイ・サンズ
TH|Wat Arun|Wat Arun|Wat Arun|Wat Arun|郑王庙|ワット・アルン
KR|Gyeongbokgung Palace|der Gyeongbokgung-Palast|le palais Gyeongbokgung|el palacio Gyeongbokgung|景福宫|景福宮
CA|the CN Tower|der CN Tower|la tour CN|la Torre CN|加拿大国家电视塔|CNタワー
CA|Banff National Park|der Banff-Nationalpark|le parc national de Banff|el parque nacional Banff|班夫国家公园|バンフ国立公園
ZA|Table Mountain|der Tafelberg|la montagne de la Table|la montaña de la Mesa|桌山|テーブルマウンテン
TZ|Mount Kilimanjaro|der Kilimandscharo|le Kilimandjaro|el Kilimanjaro|乞力马扎罗山|キリマンジャロ
CZ|the Charles Bridge|die Karlsbrücke|le pont Charles|el puente de Carlos|查理大桥|カレル橋
AT|Schönbrunn Palace|das Schloss Schönbrunn|le château de Schönbrunn|el palacio de Schönbrunn|美泉宫|シェーンブルン宮殿
BE|the Atomium|das Atomium|l'Atomium|el Atomium|原子塔|アトミウム
CL|Easter Island|die Osterinsel|l'île de Pâques|la Isla de Pascua|复活节岛|イースター島
AR|the Perito Moreno Glacier|der Perito-Moreno-Gletscher|le glacier Perito Moreno|el glaciar Perito Moreno|佩里托莫雷诺冰川|ペリト・モレノ氷河
CH|Chillon Castle|das Schloss Chillon|le château de Chillon|el castillo de Chillon|西庸城堡|シヨン城
NL|the Rijksmuseum|das Rijksmuseum|le Rijksmuseum|el Rijksmuseum|荷兰国家博物馆|アムステルダム国立美術館
PL|Wawel Castle|das Wawel-Schloss|le château du Wawel|el castillo de Wawel|瓦维尔城堡|ヴァヴェル城
US|the Hollywood Sign|der Hollywood-Schriftzug|le panneau Hollywood|el letrero de Hollywood|好莱坞标志|ハリウッドサイン
US|Yellowstone National Park|der Yellowstone-Nationalpark|le parc national de Yellowstone|el parque nacional de Yellowstone|黄石国家公园|イエローストーン国立公園
US|the Lincoln Memorial|das Lincoln Memorial|le Lincoln Memorial|el Monumento a Lincoln|林肯纪念堂|リンカーン記念館
US|Central Park|der Central Park|Central Park|Central Park|中央公园|セントラル・パーク
US|the Space Needle|die Space Needle|la Space Needle|la Space Needle|太空针塔|スペース・ニードル
GB|Westminster Abbey|die Westminster Abbey|l'abbaye de Westminster|la abadía de Westminster|威斯敏斯特教堂|ウェストミンスター寺院
GB|the London Eye|das London Eye|le London Eye|el London Eye|伦敦眼|ロンドン・アイ
GB|Tower Bridge|die Tower Bridge|le Tower Bridge|el Puente de la Torre|伦敦塔桥|タワーブリッジ
FR|the Arc de Triomphe|der Arc de Triomphe|l'Arc de triomphe|el Arco de Triunfo|凯旋门|凱旋門
FR|the Musée d'Orsay|das Musée d'Orsay|le musée d'Orsay|el Museo de Orsay|奥赛博物馆|オルセー美術館
FR|the Basilica of Sacré-Cœur|die Basilika Sacré-Cœur|la basilique du Sacré-Cœur|la basílica del Sagrado Corazón|圣心大教堂|サクレ・クール寺院
IT|St. Mark's Basilica|der Markusdom|la basilique Saint-Marc|la basílica de San Marcos|圣马可大教堂|サン・マルコ寺院
IT|the Rialto Bridge|die Rialtobrücke|le pont du Rialto|el puente de Rialto|里亚托桥|リアルト橋
IT|Mount Vesuvius|der Vesuv|le Vésuve|el Vesubio|维苏威火山|ヴェスヴィオ山
IT|Milan Cathedral|der Mailänder Dom|la cathédrale de Milan|la catedral de Milán|米兰大教堂|ミラノ大聖堂
ES|Park Güell|der Park Güell|le parc Güell|el Parque Güell|桂尔公园|グエル公園
ES|the Guggenheim Museum Bilbao|das Guggenheim-Museum Bilbao|le musée Guggenheim de Bilbao|el Museo Guggenheim Bilbao|毕尔巴鄂古根海姆博物馆|ビルバオ・グッゲンハイム美術館
DE|Heidelberg Castle|das Heidelberger Schloss|le château de Heidelberg|el castillo de Heidelberg|海德堡城堡|ハイデルベルク城
NL|the Anne Frank House|das Anne-Frank-Haus|la maison d'Anne Frank|la Casa de Ana Frank|安妮之家|アンネ・フランクの家
BE|Manneken Pis|das Manneken Pis|le Manneken-Pis|el Manneken Pis|撒尿小童|小便小僧
CZ|Prague Castle|die Prager Burg|le château de Prague|el Castillo de Praga|布拉格城堡|プラハ城
PT|the Belém Tower|der Torre de Belém|la tour de Belém|la Torre de Belém|贝伦塔|ベレンの塔
RU|Lake Baikal|der Baikalsee|le lac Baïkal|el lago Baikal|贝加尔湖|バイカル湖
CN|the Summer Palace|der Sommerpalast|le palais d'Été|el Palacio de Verano|颐和园|頤和園
CN|the Temple of Heaven|der Himmelstempel|le temple du Ciel|el Templo del Cielo|天坛|天壇
IN|the Qutub Minar|der Qutb Minar|le Qutub Minar|el Qutab Minar|顾特卜塔|クトゥブ・ミナール
JP|Kinkaku-ji|der Kinkaku-ji|le Kinkaku-ji|el Kinkaku-ji|金阁寺|金閣寺
TR|Ephesus|Ephesos|Éphèse|Éfeso|以弗所|エフェソス
EG|the Valley of the Kings|das Tal der Könige|la Vallée des rois|el Valle de los Reyes|帝王谷|王家の谷
EG|the Karnak Temple|der Karnak-Tempel|le temple de Karnak|el templo de Karnak|卡纳克神庙|カルナック神殿
ZA|Kruger National Park|der Kruger-Nationalpark|le parc national Kruger|el parque nacional Kruger|克鲁格国家公园|クルーガー国立公園
TZ|Serengeti National Park|der Serengeti-Nationalpark|le parc national du Serengeti|el parque nacional del Serengeti|塞伦盖蒂国家公园|セレンゲティ国立公園
BR|Copacabana Beach|die Copacabana|la plage de Copacabana|la playa de Copacabana|科帕卡巴纳海滩|コパカバーナ海岸
AU|Bondi Beach|der Bondi Beach|la plage de Bondi|la playa Bondi|邦迪海滩|ボンダイビーチ
AU|the Sydney Harbour Bridge|die Sydney Harbour Bridge|le Sydney Harbour Bridge|el puente de la bahía de Sídney|悉尼海港大桥|シドニー・ハーバーブリッジ
"""

# Company names are the same in en/de/fr/es; zh and ja use their usual local names.
COMPANIES = """
JP|Toyota|丰田|トヨタ
JP|Honda|本田|ホンダ
JP|Sony|索尼|ソニー
JP|Nintendo|任天堂|任天堂
JP|Panasonic|松下|パナソニック
JP|Canon|佳能|キヤノン
JP|Nissan|日产|日産
JP|Mitsubishi|三菱|三菱
JP|Yamaha|雅马哈|ヤマハ
JP|Toshiba|东芝|東芝
KR|Samsung|三星|サムスン
KR|Hyundai|现代|ヒュンダイ
KR|LG|LG|LG
KR|Kia|起亚|キア
US|Apple|苹果|アップル
US|Microsoft|微软|マイクロソフト
US|Google|谷歌|グーグル
US|Amazon|亚马逊|アマゾン
US|IBM|IBM|IBM
US|Intel|英特尔|インテル
US|Coca-Cola|可口可乐|コカ・コーラ
US|McDonald's|麦当劳|マクドナルド
US|Ford|福特|フォード
US|General Motors|通用汽车|ゼネラルモーターズ
US|Boeing|波音|ボーイング
US|Tesla|特斯拉|テスラ
US|Nike|耐克|ナイキ
US|Walmart|沃尔玛|ウォルマート
US|Disney|迪士尼|ディズニー
US|Netflix|奈飞|ネットフリックス
US|Starbucks|星巴克|スターバックス
DE|Volkswagen|大众|フォルクスワーゲン
DE|BMW|宝马|BMW
DE|Mercedes-Benz|梅赛德斯-奔驰|メルセデス・ベンツ
DE|Siemens|西门子|シーメンス
DE|Adidas|阿迪达斯|アディダス
DE|SAP|SAP|SAP
DE|Bayer|拜耳|バイエル
DE|Porsche|保时捷|ポルシェ
DE|Audi|奥迪|アウディ
DE|Lufthansa|汉莎航空|ルフトハンザ
DE|Bosch|博世|ボッシュ
CH|Nestlé|雀巢|ネスレ
CH|Rolex|劳力士|ロレックス
CH|Novartis|诺华|ノバルティス
CH|Swatch|斯沃琪|スウォッチ
IT|Ferrari|法拉利|フェラーリ
IT|Fiat|菲亚特|フィアット
IT|Lamborghini|兰博基尼|ランボルギーニ
IT|Gucci|古驰|グッチ
IT|Prada|普拉达|プラダ
IT|Barilla|百味来|バリラ
FR|Renault|雷诺|ルノー
FR|Peugeot|标致|プジョー
FR|Michelin|米其林|ミシュラン
FR|L'Oréal|欧莱雅|ロレアル
FR|Chanel|香奈儿|シャネル
FR|Louis Vuitton|路易威登|ルイ・ヴィトン
FR|Danone|达能|ダノン
SE|IKEA|宜家|イケア
SE|Volvo|沃尔沃|ボルボ
SE|Ericsson|爱立信|エリクソン
SE|Spotify|Spotify|スポティファイ
SE|H&M|H&M|H&M
FI|Nokia|诺基亚|ノキア
DK|Lego|乐高|レゴ
DK|Carlsberg|嘉士伯|カールスバーグ
NL|Heineken|喜力|ハイネケン
NL|Philips|飞利浦|フィリップス
CN|Huawei|华为|ファーウェイ
CN|Alibaba|阿里巴巴|アリババ
CN|Tencent|腾讯|テンセント
CN|Lenovo|联想|レノボ
CN|Xiaomi|小米|シャオミ
CN|Baidu|百度|バイドゥ
ES|Zara|Zara|ザラ
ES|Seat|西雅特|セアト
ES|Banco Santander|桑坦德银行|サンタンデール銀行
ES|Telefónica|西班牙电信|テレフォニカ
IN|Tata Motors|塔塔汽车|タタ・モーターズ
IN|Infosys|印孚瑟斯|インフォシス
CA|BlackBerry|黑莓|ブラックベリー
GB|Rolls-Royce|劳斯莱斯|ロールス・ロイス
GB|HSBC|汇丰|HSBC
GB|Jaguar|捷豹|ジャガー
GB|Burberry|博柏利|バーバリー
GB|Vodafone|沃达丰|ボーダフォン
CZ|Škoda|斯柯达|シュコダ
US|PepsiCo|百事公司|ペプシコ
US|Oracle|甲骨文|オラクル
US|Nvidia|英伟达|エヌビディア
US|Harley-Davidson|哈雷戴维森|ハーレーダビッドソン
US|Pfizer|辉瑞|ファイザー
US|Cisco|思科|シスコ
US|Dell|戴尔|デル
JP|Suzuki|铃木|スズキ
JP|Mazda|马自达|マツダ
JP|Subaru|斯巴鲁|スバル
JP|Nikon|尼康|ニコン
JP|Uniqlo|优衣库|ユニクロ
JP|Hitachi|日立|日立
CN|BYD|比亚迪|BYD
CN|Haier|海尔|ハイアール
DE|Puma|彪马|プーマ
DE|BASF|巴斯夫|BASF
DE|Allianz|安联|アリアンツ
FR|Hermès|爱马仕|エルメス
FR|Dior|迪奥|ディオール
FR|Carrefour|家乐福|カルフール
FR|Sanofi|赛诺菲|サノフィ
FR|Ubisoft|育碧|ユービーアイソフト
IT|Pirelli|倍耐力|ピレリ
IT|Ducati|杜卡迪|ドゥカティ
IT|Versace|范思哲|ヴェルサーチェ
IT|Armani|阿玛尼|アルマーニ
GB|BP|BP|BP
GB|Tesco|乐购|テスコ
GB|Barclays|巴克莱|バークレイズ
GB|Aston Martin|阿斯顿·马丁|アストンマーティン
NL|ASML|阿斯麦|ASML
CH|Roche|罗氏|ロシュ
SE|Electrolux|伊莱克斯|エレクトロラックス
DK|Maersk|马士基|マースク
DK|Novo Nordisk|诺和诺德|ノボノルディスク
IN|Wipro|威普罗|ウィプロ
CA|Bombardier|庞巴迪|ボンバルディア
RU|Kaspersky|卡巴斯基|カスペルスキー
"""

# Cities: CLDR time-zone exemplar cities (localized by CLDR) and handwritten ones.
CITY_ZONES = """
America/New_York America/Los_Angeles America/Chicago America/Denver America/Phoenix
America/Detroit Pacific/Honolulu America/Anchorage America/Toronto America/Vancouver
America/Edmonton America/Winnipeg America/Halifax America/Monterrey America/Cancun
America/Tijuana America/Sao_Paulo America/Manaus America/Recife America/Guayaquil
Europe/Istanbul Europe/Zurich Asia/Vladivostok Asia/Novosibirsk Asia/Yekaterinburg
Europe/Kaliningrad Asia/Shanghai Asia/Karachi Asia/Almaty Africa/Casablanca
Africa/Johannesburg Africa/Lagos Africa/Dar_es_Salaam Africa/Douala Australia/Sydney
Australia/Melbourne Australia/Perth Australia/Brisbane Australia/Adelaide Australia/Darwin
Pacific/Auckland Asia/Samarkand
"""
CITY_NAME = {("America/Sao_Paulo", "en"): "São Paulo"}
CITIES = """
DE|Munich|München|Munich|Múnich|慕尼黑|ミュンヘン
DE|Hamburg|Hamburg|Hambourg|Hamburgo|汉堡|ハンブルク
DE|Frankfurt|Frankfurt am Main|Francfort|Fráncfort|法兰克福|フランクフルト
DE|Cologne|Köln|Cologne|Colonia|科隆|ケルン
IT|Milan|Mailand|Milan|Milán|米兰|ミラノ
IT|Venice|Venedig|Venise|Venecia|威尼斯|ヴェネツィア
IT|Florence|Florenz|Florence|Florencia|佛罗伦萨|フィレンツェ
IT|Naples|Neapel|Naples|Nápoles|那不勒斯|ナポリ
ES|Barcelona|Barcelona|Barcelone|Barcelona|巴塞罗那|バルセロナ
ES|Seville|Sevilla|Séville|Sevilla|塞维利亚|セビリア
ES|Bilbao|Bilbao|Bilbao|Bilbao|毕尔巴鄂|ビルバオ
FR|Marseille|Marseille|Marseille|Marsella|马赛|マルセイユ
FR|Lyon|Lyon|Lyon|Lyon|里昂|リヨン
FR|Nice|Nizza|Nice|Niza|尼斯|ニース
FR|Bordeaux|Bordeaux|Bordeaux|Burdeos|波尔多|ボルドー
JP|Osaka|Osaka|Osaka|Osaka|大阪|大阪
JP|Kyoto|Kyoto|Kyoto|Kioto|京都|京都
JP|Yokohama|Yokohama|Yokohama|Yokohama|横滨|横浜
IN|Mumbai|Mumbai|Bombay|Bombay|孟买|ムンバイ
IN|Kolkata|Kalkutta|Calcutta|Calcuta|加尔各答|コルカタ
IN|Bangalore|Bangalore|Bangalore|Bangalore|班加罗尔|バンガロール
VN|Ho Chi Minh City|Ho-Chi-Minh-Stadt|Hô-Chi-Minh-Ville|Ciudad Ho Chi Minh|胡志明市|ホーチミン
CN|Guangzhou|Guangzhou|Canton|Cantón|广州|広州
BR|Rio de Janeiro|Rio de Janeiro|Rio de Janeiro|Río de Janeiro|里约热内卢|リオデジャネイロ
GB|Manchester|Manchester|Manchester|Mánchester|曼彻斯特|マンチェスター
GB|Liverpool|Liverpool|Liverpool|Liverpool|利物浦|リバプール
CH|Geneva|Genf|Genève|Ginebra|日内瓦|ジュネーブ
RU|Saint Petersburg|Sankt Petersburg|Saint-Pétersbourg|San Petersburgo|圣彼得堡|サンクトペテルブルク
KR|Busan|Busan|Busan|Busan|釜山|釜山
PT|Porto|Porto|Porto|Oporto|波尔图|ポルト
PL|Krakow|Krakau|Cracovie|Cracovia|克拉科夫|クラクフ
AT|Salzburg|Salzburg|Salzbourg|Salzburgo|萨尔茨堡|ザルツブルク
NL|Rotterdam|Rotterdam|Rotterdam|Róterdam|鹿特丹|ロッテルダム
BE|Antwerp|Antwerpen|Anvers|Amberes|安特卫普|アントワープ
SE|Gothenburg|Göteborg|Göteborg|Gotemburgo|哥德堡|ヨーテボリ
EG|Alexandria|Alexandria|Alexandrie|Alejandría|亚历山大|アレクサンドリア
MA|Marrakesh|Marrakesch|Marrakech|Marrakech|马拉喀什|マラケシュ
ZA|Cape Town|Kapstadt|Le Cap|Ciudad del Cabo|开普敦|ケープタウン
US|San Francisco|San Francisco|San Francisco|San Francisco|旧金山|サンフランシスコ
US|Boston|Boston|Boston|Boston|波士顿|ボストン
US|Seattle|Seattle|Seattle|Seattle|西雅图|シアトル
US|Miami|Miami|Miami|Miami|迈阿密|マイアミ
US|Las Vegas|Las Vegas|Las Vegas|Las Vegas|拉斯维加斯|ラスベガス
US|Houston|Houston|Houston|Houston|休斯敦|ヒューストン
CA|Montreal|Montreal|Montréal|Montreal|蒙特利尔|モントリオール
CA|Calgary|Calgary|Calgary|Calgary|卡尔加里|カルガリー
MX|Acapulco|Acapulco|Acapulco|Acapulco|阿卡普尔科|アカプルコ
CN|Chengdu|Chengdu|Chengdu|Chengdu|成都|成都
CN|Xi'an|Xi'an|Xi'an|Xi'an|西安|西安
CN|Shenzhen|Shenzhen|Shenzhen|Shenzhen|深圳|深圳
JP|Hiroshima|Hiroshima|Hiroshima|Hiroshima|广岛|広島
JP|Nagoya|Nagoya|Nagoya|Nagoya|名古屋|名古屋
JP|Sapporo|Sapporo|Sapporo|Sapporo|札幌|札幌
KR|Incheon|Incheon|Incheon|Incheon|仁川|仁川
IN|Chennai|Chennai|Chennai|Chennai|金奈|チェンナイ
IN|Jaipur|Jaipur|Jaipur|Jaipur|斋浦尔|ジャイプール
PK|Lahore|Lahore|Lahore|Lahore|拉合尔|ラホール
TH|Chiang Mai|Chiang Mai|Chiang Mai|Chiang Mai|清迈|チェンマイ
SA|Mecca|Mekka|La Mecque|La Meca|麦加|メッカ
TR|Antalya|Antalya|Antalya|Antalya|安塔利亚|アンタルヤ
DE|Stuttgart|Stuttgart|Stuttgart|Stuttgart|斯图加特|シュトゥットガルト
DE|Dresden|Dresden|Dresde|Dresde|德累斯顿|ドレスデン
DE|Düsseldorf|Düsseldorf|Düsseldorf|Düsseldorf|杜塞尔多夫|デュッセルドルフ
IT|Turin|Turin|Turin|Turín|都灵|トリノ
IT|Bologna|Bologna|Bologne|Bolonia|博洛尼亚|ボローニャ
IT|Verona|Verona|Vérone|Verona|维罗纳|ヴェローナ
ES|Málaga|Málaga|Malaga|Málaga|马拉加|マラガ
ES|Zaragoza|Saragossa|Saragosse|Zaragoza|萨拉戈萨|サラゴサ
FR|Toulouse|Toulouse|Toulouse|Toulouse|图卢兹|トゥールーズ
FR|Strasbourg|Straßburg|Strasbourg|Estrasburgo|斯特拉斯堡|ストラスブール
GB|Oxford|Oxford|Oxford|Oxford|牛津|オックスフォード
CH|Basel|Basel|Bâle|Basilea|巴塞尔|バーゼル
AT|Innsbruck|Innsbruck|Innsbruck|Innsbruck|因斯布鲁克|インスブルック
PL|Gdańsk|Danzig|Gdańsk|Gdansk|格但斯克|グダニスク
GR|Thessaloniki|Thessaloniki|Thessalonique|Tesalónica|塞萨洛尼基|テッサロニキ
EG|Luxor|Luxor|Louxor|Luxor|卢克索|ルクソール
KE|Mombasa|Mombasa|Mombasa|Mombasa|蒙巴萨|モンバサ
NZ|Christchurch|Christchurch|Christchurch|Christchurch|基督城|クライストチャーチ
"""

# ---------------------------------------------------------------------------------------------
# Elements and antonyms (handwritten)

ELEMENTS = """
H|hydrogen|Wasserstoff|hydrogène|hidrógeno|氢|水素
He|helium|Helium|hélium|helio|氦|ヘリウム
Li|lithium|Lithium|lithium|litio|锂|リチウム
Be|beryllium|Beryllium|béryllium|berilio|铍|ベリリウム
B|boron|Bor|bore|boro|硼|ホウ素
C|carbon|Kohlenstoff|carbone|carbono|碳|炭素
N|nitrogen|Stickstoff|azote|nitrógeno|氮|窒素
O|oxygen|Sauerstoff|oxygène|oxígeno|氧|酸素
F|fluorine|Fluor|fluor|flúor|氟|フッ素
Ne|neon|Neon|néon|neón|氖|ネオン
Na|sodium|Natrium|sodium|sodio|钠|ナトリウム
Mg|magnesium|Magnesium|magnésium|magnesio|镁|マグネシウム
Al|aluminium|Aluminium|aluminium|aluminio|铝|アルミニウム
Si|silicon|Silicium|silicium|silicio|硅|ケイ素
P|phosphorus|Phosphor|phosphore|fósforo|磷|リン
S|sulfur|Schwefel|soufre|azufre|硫|硫黄
Cl|chlorine|Chlor|chlore|cloro|氯|塩素
Ar|argon|Argon|argon|argón|氩|アルゴン
K|potassium|Kalium|potassium|potasio|钾|カリウム
Ca|calcium|Calcium|calcium|calcio|钙|カルシウム
Sc|scandium|Scandium|scandium|escandio|钪|スカンジウム
Ti|titanium|Titan|titane|titanio|钛|チタン
V|vanadium|Vanadium|vanadium|vanadio|钒|バナジウム
Cr|chromium|Chrom|chrome|cromo|铬|クロム
Mn|manganese|Mangan|manganèse|manganeso|锰|マンガン
Fe|iron|Eisen|fer|hierro|铁|鉄
Co|cobalt|Cobalt|cobalt|cobalto|钴|コバルト
Ni|nickel|Nickel|nickel|níquel|镍|ニッケル
Cu|copper|Kupfer|cuivre|cobre|铜|銅
Zn|zinc|Zink|zinc|zinc|锌|亜鉛
Ga|gallium|Gallium|gallium|galio|镓|ガリウム
Ge|germanium|Germanium|germanium|germanio|锗|ゲルマニウム
As|arsenic|Arsen|arsenic|arsénico|砷|ヒ素
Se|selenium|Selen|sélénium|selenio|硒|セレン
Br|bromine|Brom|brome|bromo|溴|臭素
Kr|krypton|Krypton|krypton|kriptón|氪|クリプトン
Rb|rubidium|Rubidium|rubidium|rubidio|铷|ルビジウム
Sr|strontium|Strontium|strontium|estroncio|锶|ストロンチウム
Y|yttrium|Yttrium|yttrium|itrio|钇|イットリウム
Zr|zirconium|Zirconium|zirconium|circonio|锆|ジルコニウム
Nb|niobium|Niob|niobium|niobio|铌|ニオブ
Mo|molybdenum|Molybdän|molybdène|molibdeno|钼|モリブデン
Tc|technetium|Technetium|technétium|tecnecio|锝|テクネチウム
Ru|ruthenium|Ruthenium|ruthénium|rutenio|钌|ルテニウム
Rh|rhodium|Rhodium|rhodium|rodio|铑|ロジウム
Pd|palladium|Palladium|palladium|paladio|钯|パラジウム
Ag|silver|Silber|argent|plata|银|銀
Cd|cadmium|Cadmium|cadmium|cadmio|镉|カドミウム
In|indium|Indium|indium|indio|铟|インジウム
Sn|tin|Zinn|étain|estaño|锡|スズ
Sb|antimony|Antimon|antimoine|antimonio|锑|アンチモン
Te|tellurium|Tellur|tellure|telurio|碲|テルル
I|iodine|Iod|iode|yodo|碘|ヨウ素
Xe|xenon|Xenon|xénon|xenón|氙|キセノン
Cs|caesium|Caesium|césium|cesio|铯|セシウム
Ba|barium|Barium|baryum|bario|钡|バリウム
La|lanthanum|Lanthan|lanthane|lantano|镧|ランタン
Ce|cerium|Cer|cérium|cerio|铈|セリウム
Nd|neodymium|Neodym|néodyme|neodimio|钕|ネオジム
W|tungsten|Wolfram|tungstène|wolframio|钨|タングステン
Os|osmium|Osmium|osmium|osmio|锇|オスミウム
Ir|iridium|Iridium|iridium|iridio|铱|イリジウム
Pt|platinum|Platin|platine|platino|铂|白金
Au|gold|Gold|or|oro|金|金
Hg|mercury|Quecksilber|mercure|mercurio|汞|水銀
Pb|lead|Blei|plomb|plomo|铅|鉛
Bi|bismuth|Bismut|bismuth|bismuto|铋|ビスマス
Po|polonium|Polonium|polonium|polonio|钋|ポロニウム
Rn|radon|Radon|radon|radón|氡|ラドン
Ra|radium|Radium|radium|radio|镭|ラジウム
U|uranium|Uran|uranium|uranio|铀|ウラン
Pu|plutonium|Plutonium|plutonium|plutonio|钚|プルトニウム
Pr|praseodymium|Praseodym|praséodyme|praseodimio|镨|プラセオジム
Pm|promethium|Promethium|prométhium|prometio|钷|プロメチウム
Sm|samarium|Samarium|samarium|samario|钐|サマリウム
Eu|europium|Europium|europium|europio|铕|ユウロピウム
Gd|gadolinium|Gadolinium|gadolinium|gadolinio|钆|ガドリニウム
Tb|terbium|Terbium|terbium|terbio|铽|テルビウム
Dy|dysprosium|Dysprosium|dysprosium|disprosio|镝|ジスプロシウム
Ho|holmium|Holmium|holmium|holmio|钬|ホルミウム
Er|erbium|Erbium|erbium|erbio|铒|エルビウム
Tm|thulium|Thulium|thulium|tulio|铥|ツリウム
Yb|ytterbium|Ytterbium|ytterbium|iterbio|镱|イッテルビウム
Lu|lutetium|Lutetium|lutécium|lutecio|镥|ルテチウム
Hf|hafnium|Hafnium|hafnium|hafnio|铪|ハフニウム
Ta|tantalum|Tantal|tantale|tántalo|钽|タンタル
Re|rhenium|Rhenium|rhénium|renio|铼|レニウム
Tl|thallium|Thallium|thallium|talio|铊|タリウム
At|astatine|Astat|astate|astato|砹|アスタチン
Fr|francium|Francium|francium|francio|钫|フランシウム
Ac|actinium|Actinium|actinium|actinio|锕|アクチニウム
Th|thorium|Thorium|thorium|torio|钍|トリウム
Pa|protactinium|Protactinium|protactinium|protactinio|镤|プロトアクチニウム
Np|neptunium|Neptunium|neptunium|neptunio|镎|ネプツニウム
Am|americium|Americium|américium|americio|镅|アメリシウム
Cm|curium|Curium|curium|curio|锔|キュリウム
Bk|berkelium|Berkelium|berkélium|berkelio|锫|バークリウム
Cf|californium|Californium|californium|californio|锎|カリホルニウム
Es|einsteinium|Einsteinium|einsteinium|einstenio|锿|アインスタイニウム
Fm|fermium|Fermium|fermium|fermio|镄|フェルミウム
Md|mendelevium|Mendelevium|mendélévium|mendelevio|钔|メンデレビウム
No|nobelium|Nobelium|nobélium|nobelio|锘|ノーベリウム
Lr|lawrencium|Lawrencium|lawrencium|lawrencio|铹|ローレンシウム
"""

# Pairs "a/b" per language (en de fr es zh ja); each pair gives the facts a → b and b → a.
ANTONYMS = """
hot/cold|heiß/kalt|chaud/froid|caliente/frío|热/冷|熱い/冷たい
big/small|groß/klein|grand/petit|grande/pequeño|大/小|大きい/小さい
long/short|lang/kurz|long/court|largo/corto|长/短|長い/短い
fast/slow|schnell/langsam|rapide/lent|rápido/lento|快/慢|速い/遅い
good/bad|gut/schlecht|bon/mauvais|bueno/malo|好/坏|良い/悪い
happy/sad|glücklich/traurig|heureux/triste|feliz/triste|快乐/悲伤|嬉しい/悲しい
new/old|neu/alt|nouveau/vieux|nuevo/viejo|新/旧|新しい/古い
bright/dark|hell/dunkel|clair/sombre|claro/oscuro|明亮/黑暗|明るい/暗い
heavy/light|schwer/leicht|lourd/léger|pesado/ligero|重/轻|重い/軽い
rich/poor|reich/arm|riche/pauvre|rico/pobre|富/穷|豊か/貧しい
strong/weak|stark/schwach|fort/faible|fuerte/débil|强/弱|強い/弱い
high/low|hoch/niedrig|haut/bas|alto/bajo|高/低|高い/低い
early/late|früh/spät|tôt/tard|temprano/tarde|早/晚|早い/遅い
wet/dry|nass/trocken|mouillé/sec|mojado/seco|湿/干|濡れた/乾いた
easy/difficult|einfach/schwierig|facile/difficile|fácil/difícil|容易/困难|易しい/難しい
clean/dirty|sauber/schmutzig|propre/sale|limpio/sucio|干净/肮脏|きれい/汚い
thick/thin|dick/dünn|épais/mince|grueso/delgado|厚/薄|厚い/薄い
wide/narrow|breit/schmal|large/étroit|ancho/estrecho|宽/窄|広い/狭い
near/far|nah/fern|proche/lointain|cercano/lejano|近/远|近い/遠い
true/false|wahr/falsch|vrai/faux|verdadero/falso|真/假|真/偽
left/right|links/rechts|gauche/droite|izquierda/derecha|左/右|左/右
black/white|schwarz/weiß|noir/blanc|negro/blanco|黑/白|黒/白
day/night|Tag/Nacht|jour/nuit|día/noche|白天/黑夜|昼/夜
love/hate|Liebe/Hass|amour/haine|amor/odio|爱/恨|愛/憎しみ
war/peace|Krieg/Frieden|guerre/paix|guerra/paz|战争/和平|戦争/平和
beginning/end|Anfang/Ende|début/fin|principio/fin|开始/结束|始まり/終わり
win/lose|gewinnen/verlieren|gagner/perdre|ganar/perder|赢/输|勝つ/負ける
buy/sell|kaufen/verkaufen|acheter/vendre|comprar/vender|买/卖|買う/売る
push/pull|drücken/ziehen|pousser/tirer|empujar/tirar|推/拉|押す/引く
come/go|kommen/gehen|venir/aller|venir/ir|来/去|来る/行く
male/female|männlich/weiblich|masculin/féminin|masculino/femenino|男性/女性|男性/女性
alive/dead|lebendig/tot|vivant/mort|vivo/muerto|活/死|生/死
soft/hard|weich/hart|mou/dur|blando/duro|软/硬|柔らかい/硬い
inside/outside|innen/außen|intérieur/extérieur|dentro/fuera|内/外|内/外
summer/winter|Sommer/Winter|été/hiver|verano/invierno|夏天/冬天|夏/冬
north/south|Norden/Süden|nord/sud|norte/sur|北/南|北/南
east/west|Osten/Westen|est/ouest|este/oeste|东/西|東/西
friend/enemy|Freund/Feind|ami/ennemi|amigo/enemigo|朋友/敌人|味方/敵
loud/quiet|laut/leise|bruyant/silencieux|ruidoso/silencioso|吵闹/安静|うるさい/静か
first/last|erste/letzte|premier/dernier|primero/último|第一/最后|最初/最後
yes/no|ja/nein|oui/non|sí/no|是/否|はい/いいえ
success/failure|Erfolg/Misserfolg|succès/échec|éxito/fracaso|成功/失败|成功/失敗
open/closed|offen/geschlossen|ouvert/fermé|abierto/cerrado|开/关|開いた/閉じた
full/empty|voll/leer|plein/vide|lleno/vacío|满/空|いっぱい/空っぽ
question/answer|Frage/Antwort|question/réponse|pregunta/respuesta|问题/答案|質問/答え
remember/forget|erinnern/vergessen|se souvenir/oublier|recordar/olvidar|记得/忘记|覚える/忘れる
before/after|vorher/nachher|avant/après|antes/después|以前/以后|以前/以後
front/back|vorne/hinten|devant/derrière|delante/detrás|前面/后面|前/後ろ
accept/refuse|annehmen/ablehnen|accepter/refuser|aceptar/rechazar|接受/拒绝|受け入れる/断る
laugh/cry|lachen/weinen|rire/pleurer|reír/llorar|笑/哭|笑う/泣く
increase/decrease|zunehmen/abnehmen|augmenter/diminuer|aumentar/disminuir|增加/减少|増える/減る
entrance/exit|Eingang/Ausgang|entrée/sortie|entrada/salida|入口/出口|入口/出口
sunrise/sunset|Sonnenaufgang/Sonnenuntergang|lever du soleil/coucher du soleil|amanecer/atardecer|日出/日落|日の出/日の入り
majority/minority|Mehrheit/Minderheit|majorité/minorité|mayoría/minoría|多数/少数|多数/少数
maximum/minimum|Maximum/Minimum|maximum/minimum|máximo/mínimo|最大/最小|最大/最小
positive/negative|positiv/negativ|positif/négatif|positivo/negativo|积极/消极|ポジティブ/ネガティブ
awake/asleep|wach/schlafend|éveillé/endormi|despierto/dormido|醒着/睡着|起きている/眠っている
safe/dangerous|sicher/gefährlich|sûr/dangereux|seguro/peligroso|安全/危险|安全/危険
legal/illegal|legal/illegal|légal/illégal|legal/ilegal|合法/非法|合法/違法
possible/impossible|möglich/unmöglich|possible/impossible|posible/imposible|可能/不可能|可能/不可能
visible/invisible|sichtbar/unsichtbar|visible/invisible|visible/invisible|看得见/看不见|見える/見えない
honest/dishonest|ehrlich/unehrlich|honnête/malhonnête|honesto/deshonesto|诚实/不诚实|正直/不正直
polite/rude|höflich/unhöflich|poli/impoli|educado/maleducado|礼貌/粗鲁|礼儀正しい/失礼
brave/cowardly|mutig/feige|courageux/lâche|valiente/cobarde|勇敢/胆小|勇敢/臆病
smart/stupid|klug/dumm|intelligent/stupide|inteligente/estúpido|聪明/愚蠢|賢い/愚か
beautiful/ugly|schön/hässlich|beau/laid|bonito/feo|美丽/丑陋|美しい/醜い
healthy/sick|gesund/krank|sain/malade|sano/enfermo|健康/生病|健康/病気
deep/shallow|tief/seicht|profond/peu profond|profundo/poco profundo|深/浅|深い/浅い
"""
# Other correct answers for a subject (English id, language): "light" is also the opposite of
# "dark", "right" of "wrong".
ANTONYM_ALIASES = {
    ("big", "en"): ["little"],
    ("small", "en"): ["large"],
    ("old", "en"): ["young"],
    ("light", "en"): ["dark"],
    ("dark", "en"): ["light"],
    ("right", "en"): ["wrong"],
    ("friend", "en"): ["foe"],
    ("enemy", "en"): ["ally"],
    ("loud", "en"): ["soft"],
    ("soft", "en"): ["loud"],
    ("hard", "en"): ["easy"],
    ("easy", "en"): ["hard"],
    ("thin", "en"): ["fat"],
    ("narrow", "en"): ["broad"],
    ("far", "en"): ["close"],
    ("poor", "en"): ["wealthy"],
    ("happy", "en"): ["unhappy"],
    ("slow", "en"): ["quick"],
    ("end", "en"): ["start"],
    ("bright", "en"): ["dim"],
    ("quiet", "en"): ["noisy"],
    ("closed", "en"): ["shut"],
    ("back", "en"): ["forward"],
    ("safe", "en"): ["unsafe"],
    ("accept", "en"): ["reject", "decline"],
    ("exit", "en"): ["entry"],
    ("cowardly", "en"): ["coward"],
    ("brave", "en"): ["coward"],
    ("smart", "en"): ["dumb"],
    ("stupid", "en"): ["clever", "intelligent"],
    ("sick", "en"): ["well"],
    ("healthy", "en"): ["unhealthy", "ill"],
    ("ugly", "en"): ["pretty"],
    ("rude", "en"): ["courteous"],
    ("old", "de"): ["jung"],
    ("near", "de"): ["weit"],
    ("old", "fr"): ["neuf", "jeune"],
    ("new", "fr"): ["ancien"],
    ("big", "es"): ["chico"],
    ("old", "es"): ["joven"],
    ("heavy", "es"): ["liviano"],
    ("bright", "zh"): ["暗"],
}
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
    import babel.core
    from babel import Locale
    from babel.dates import get_timezone, get_timezone_location
    from babel.languages import get_official_languages
    from babel.numbers import get_territory_currencies

    locales = {lang: Locale.parse(lang) for lang in LANGS}
    all_countries = countries()
    by_code = {c.code: c for c in all_countries}

    for c in all_countries:
        cid = c.names["en"].text
        for i, lang in enumerate(LANGS):
            name = c.names[lang]
            country_obj, country_aliases = _country_object(c, lang)
            if c.capital:
                capital = c.capital[lang]
                cap_aliases = CAPITAL_ALIASES.get(c.code, {}).get(lang, [])
                yield _row("country_capital", lang, cid, name, capital, cap_aliases)
                yield _row(
                    "capital_country",
                    lang,
                    c.capital["en"],
                    Name(capital),
                    country_obj,
                    country_aliases,
                )

            currency = get_territory_currencies(c.code)[0]
            money = locales[lang].currencies[currency]
            if lang == "ja":  # CLDR writes "スイス フラン" with a space no one types
                money_aliases = (
                    [money.split()[-1]] if " " in money else currency_aliases(lang, money)
                )
                money = money.replace(" ", "")
            else:
                money_aliases = currency_aliases(lang, money)
            if c.code not in NO_CURRENCY:
                yield _row("country_currency", lang, cid, name, money, money_aliases)

            official = get_official_languages(c.code, de_facto=True)
            others = [code for code in official if code != c.language]
            speech = locales[lang].languages[c.language]
            speech_aliases = [
                locales[lang].languages[o] for o in others if o in locales[lang].languages
            ]
            speech_aliases += LANGUAGE_ALIASES.get((c.language, lang), [])
            if lang == "en":  # "The main language of Greece is the Greek (language)" is right too
                speech_aliases.append(f"the {speech}")
            yield _row("country_language", lang, cid, name, speech, speech_aliases)

            continent = CONTINENTS[c.continent][i]
            cont_aliases = list(CONTINENT_ALIASES.get(c.continent, {}).get(lang, []))
            if c.code in COUNTRY_CONTINENT_ALSO:
                cont_aliases.append(CONTINENTS[COUNTRY_CONTINENT_ALSO[c.code]][i])
            yield _row("country_continent", lang, cid, name, continent, cont_aliases)

    zone_territories = babel.core.get_global("zone_territories")
    for zone in CITY_ZONES.split():
        country = by_code[zone_territories[zone]]
        tz = get_timezone(zone)
        city_en = CITY_NAME.get((zone, "en")) or get_timezone_location(tz, "en", return_city=True)
        for lang in LANGS:
            city = CITY_NAME.get((zone, lang)) or get_timezone_location(tz, lang, return_city=True)
            obj, aliases = _country_object(country, lang)
            yield _row("city_country", lang, city_en, Name(city), obj, aliases)
    for line in CITIES.strip().splitlines():
        code, *names = line.split("|")
        for lang, city in zip(LANGS, names, strict=True):
            obj, aliases = _country_object(by_code[code], lang)
            yield _row("city_country", lang, names[0], Name(city), obj, aliases)

    for line in LANDMARKS.strip().splitlines():
        code, *names = line.split("|")
        landmark_id = parse_name("en", names[0]).text
        for lang, text in zip(LANGS, names, strict=True):
            obj, aliases = _country_object(by_code[code], lang)
            yield _row("landmark_country", lang, landmark_id, parse_name(lang, text), obj, aliases)

    for line in COMPANIES.strip().splitlines():
        code, latin, zh, ja = line.split("|")
        for lang, text in zip(LANGS, [latin] * 4 + [zh, ja], strict=True):
            obj, aliases = _country_object(by_code[code], lang)
            yield _row("company_country", lang, latin, Name(text), obj, aliases)

    for line in ELEMENTS.strip().splitlines():
        symbol, *names = line.split("|")
        for lang, text in zip(LANGS, names, strict=True):
            yield _row("element_symbol", lang, names[0], Name(text), symbol, [])

    yield from antonym_facts()

    for lang in LANGS:
        days = locales[lang].days["format"]["wide"]  # 0 = Monday
        months = locales[lang].months["format"]["wide"]  # 1 = January
        en_days = locales["en"].days["format"]["wide"]
        en_months = locales["en"].months["format"]["wide"]
        for d in range(7):
            yield _row("weekday_next", lang, en_days[d], Name(days[d]), days[(d + 1) % 7], [])
        for m in range(1, 13):
            nxt = m % 12 + 1
            yield _row("month_next", lang, en_months[m], Name(months[m]), months[nxt], [])


def antonym_facts() -> Iterator[FactRow]:
    """Both directions of each pair. A word that is in two pairs in some language (ja 遅い:
    slow and late) is one fact there, with the other antonym as an alias, so that no two facts
    share a prompt text (they could land in different splits)."""
    lines = [
        [cell.split("/") for cell in line.split("|")] for line in ANTONYMS.strip().splitlines()
    ]
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
                aliases += ANTONYM_ALIASES.get((sid, lang), [])
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    rows = sorted(facts(), key=lambda r: (r.relation, r.language, r.subject_id))
    check(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(r.to_json() + "\n" for r in rows), encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {len(rows)} facts to {args.out}")


if __name__ == "__main__":
    main()
