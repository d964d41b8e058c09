"""Hand-written caption words for the five caption languages: colours, backgrounds, templates, and the
relation "X wearing Y". Object names themselves come from CLDR (catalog.py); only the glue is here.

Adjectives agree with the noun "background" in each language (feminine in hi/ar: नीली पृष्ठभूमि, خلفية زرقاء).
A native-speaker review of these strings is worth doing.
"""

from __future__ import annotations

from babel.lists import format_list

LANGUAGES = ("en", "hi", "es", "zh", "ar")

COLOUR_WORDS: dict[str, dict[str, str]] = {
    "en": {"red": "red", "orange": "orange", "yellow": "yellow", "green": "green", "blue": "blue",
           "purple": "purple", "pink": "pink", "brown": "brown", "black": "black", "white": "white",
           "grey": "grey"},
    "hi": {"red": "लाल", "orange": "नारंगी", "yellow": "पीली", "green": "हरी", "blue": "नीली",
           "purple": "बैंगनी", "pink": "गुलाबी", "brown": "भूरी", "black": "काली", "white": "सफ़ेद",
           "grey": "स्लेटी"},
    "es": {"red": "rojo", "orange": "naranja", "yellow": "amarillo", "green": "verde", "blue": "azul",
           "purple": "morado", "pink": "rosa", "brown": "marrón", "black": "negro", "white": "blanco",
           "grey": "gris"},
    "zh": {"red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色",
           "purple": "紫色", "pink": "粉色", "brown": "棕色", "black": "黑色", "white": "白色",
           "grey": "灰色"},
    "ar": {"red": "حمراء", "orange": "برتقالية", "yellow": "صفراء", "green": "خضراء", "blue": "زرقاء",
           "purple": "بنفسجية", "pink": "وردية", "brown": "بنية", "black": "سوداء", "white": "بيضاء",
           "grey": "رمادية"},
}

# Background phrase per kind ({c} = main colour, {c2} = second colour of a gradient).
BACKGROUND_PHRASES: dict[str, dict[str, str]] = {
    "en": {"plain": "{c} background", "gradient": "{c} and {c2} gradient",  # + "a"/"an" in background_phrase
           "stripes": "{c} striped background", "checks": "{c} checked background",
           "dots": "{c} polka-dot background"},
    "hi": {"plain": "{c} पृष्ठभूमि", "gradient": "{c} और {c2} पृष्ठभूमि", "stripes": "{c} धारीदार पृष्ठभूमि",
           "checks": "{c} चारखाने वाली पृष्ठभूमि", "dots": "{c} बिंदीदार पृष्ठभूमि"},
    "es": {"plain": "un fondo {c}", "gradient": "un degradado {c} y {c2}", "stripes": "un fondo {c} a rayas",
           "checks": "un fondo {c} a cuadros", "dots": "un fondo {c} de lunares"},
    "zh": {"plain": "{c}背景", "gradient": "{c}和{c2}渐变背景", "stripes": "{c}条纹背景",
           "checks": "{c}格子背景", "dots": "{c}圆点背景"},
    "ar": {"plain": "خلفية {c}", "gradient": "خلفية {c} و{c2}", "stripes": "خلفية {c} مخططة",
           "checks": "خلفية {c} بمربعات", "dots": "خلفية {c} منقطة"},
}

# Long-style templates; short style is the object list alone (or CLDR keyword tags).
LONG_TEMPLATES: dict[str, list[str]] = {
    "en": ["{objs} on {bg}", "a picture of {objs} on {bg}", "an emoji of {objs} in front of {bg}",
           "{objs} against {bg}"],
    "hi": ["{bg} पर {objs}", "{bg} पर {objs} की तस्वीर", "{bg} के सामने {objs}", "{objs}, {bg}"],
    "es": ["{objs} sobre {bg}", "una imagen de {objs} sobre {bg}", "un emoji de {objs} delante de {bg}",
           "{objs} en {bg}"],
    "zh": ["{bg}上的{objs}", "{bg}上的{objs}的图片", "{bg}前的{objs}", "{objs}，{bg}"],
    "ar": ["{objs} على {bg}", "صورة {objs} على {bg}", "{objs} أمام {bg}", "{objs}، {bg}"],
}

# "person wearing attire"; Arabic conjugates the verb by the wearer's gender.
WEARING: dict[str, dict[str, str]] = {
    "en": {"any": "{person} wearing {attire}"},
    "hi": {"any": "{attire} पहने {person}"},
    "es": {"any": "{person} con {attire}"},
    "zh": {"any": "穿着{attire}的{person}"},
    "ar": {"woman": "{person} ترتدي {attire}", "any": "{person} يرتدي {attire}"},
}

TAG_SEPARATOR = {"en": ", ", "hi": ", ", "es": ", ", "zh": "、", "ar": "، "}
NO_ARTICLE_ENDINGS = ("ss", "us", "is")  # "dress", "octopus", "tennis" are singular despite the final s


def english_article(phrase: str) -> str:
    """'a dog', 'an apple'; unchanged for CLDR names with a colon ('woman: dark skin tone') and plurals."""
    if ":" in phrase or (phrase.endswith("s") and not phrase.endswith(NO_ARTICLE_ENDINGS)):
        return phrase
    vowel_sound = phrase[:1].lower() in "aeio" or (phrase[:1].lower() == "u" and not phrase.startswith("uni"))
    return ("an " if vowel_sound else "a ") + phrase


def object_list(phrases: list[str], lang: str) -> str:
    """Join object phrases with the language's list pattern (babel CLDR data: 'A, B y C', 'A、B和C')."""
    return format_list(phrases, locale=lang) if len(phrases) > 1 else phrases[0]


def background_phrase(lang: str, kind: str, colour: str, colour2: str | None = None) -> str:
    """The background in words, e.g. ('es', 'stripes', 'blue') → 'un fondo azul a rayas'."""
    words = COLOUR_WORDS[lang]
    phrase = BACKGROUND_PHRASES[lang][kind].format(c=words[colour], c2=words.get(colour2 or "", ""))
    return english_article(phrase) if lang == "en" else phrase


def wearing(lang: str, person: str, attire: str, gender: str) -> str:
    """'Priya wearing a sari' in `lang`."""
    forms = WEARING[lang]
    return forms.get(gender, forms["any"]).format(person=person, attire=attire)
