"""A small hand-written table of given names per culture, written in the script of each caption language,
so that captions can say "Priya wearing a sari" / "साड़ी पहने प्रिया" the way web alt-text does, and so that
CC3M-style hypernymisation and CC12M-style <PERSON> masking have names to remove.

Transliterations into hi/zh/ar are common renderings, hand-written; they are labels, not identities.
"""

from __future__ import annotations

# culture → gender → list of {language: spelling}
GIVEN_NAMES: dict[str, dict[str, list[dict[str, str]]]] = {
    "south_asian": {
        "woman": [
            {"en": "Priya", "hi": "प्रिया", "es": "Priya", "zh": "普丽娅", "ar": "بريا"},
            {"en": "Ananya", "hi": "अनन्या", "es": "Ananya", "zh": "阿南雅", "ar": "أنانيا"},
            {"en": "Lakshmi", "hi": "लक्ष्मी", "es": "Lakshmi", "zh": "拉克希米", "ar": "لاكشمي"},
            {"en": "Meera", "hi": "मीरा", "es": "Meera", "zh": "米拉", "ar": "ميرا"},
        ],
        "man": [
            {"en": "Rahul", "hi": "राहुल", "es": "Rahul", "zh": "拉胡尔", "ar": "راهول"},
            {"en": "Arjun", "hi": "अर्जुन", "es": "Arjun", "zh": "阿尔琼", "ar": "أرجون"},
            {"en": "Vikram", "hi": "विक्रम", "es": "Vikram", "zh": "维克拉姆", "ar": "فيكرام"},
            {"en": "Sanjay", "hi": "संजय", "es": "Sanjay", "zh": "桑杰", "ar": "سانجاي"},
        ],
    },
    "chinese": {
        "woman": [
            {"en": "Li Na", "hi": "ली ना", "es": "Li Na", "zh": "李娜", "ar": "لي نا"},
            {"en": "Wang Fang", "hi": "वांग फ़ांग", "es": "Wang Fang", "zh": "王芳", "ar": "وانغ فانغ"},
            {"en": "Xiaomei", "hi": "शियाओमेई", "es": "Xiaomei", "zh": "小美", "ar": "شياومي"},
            {"en": "Chen Jing", "hi": "चेन जिंग", "es": "Chen Jing", "zh": "陈静", "ar": "تشن جينغ"},
        ],
        "man": [
            {"en": "Zhang Wei", "hi": "झांग वेई", "es": "Zhang Wei", "zh": "张伟", "ar": "تشانغ وي"},
            {"en": "Li Ming", "hi": "ली मिंग", "es": "Li Ming", "zh": "李明", "ar": "لي مينغ"},
            {"en": "Liu Yang", "hi": "लियू यांग", "es": "Liu Yang", "zh": "刘洋", "ar": "ليو يانغ"},
            {"en": "Wang Jun", "hi": "वांग जुन", "es": "Wang Jun", "zh": "王军", "ar": "وانغ جون"},
        ],
    },
    "japanese": {
        "woman": [
            {"en": "Yuki", "hi": "युकी", "es": "Yuki", "zh": "由纪", "ar": "يوكي"},
            {"en": "Sakura", "hi": "साकुरा", "es": "Sakura", "zh": "樱", "ar": "ساكورا"},
            {"en": "Aiko", "hi": "आइको", "es": "Aiko", "zh": "爱子", "ar": "آيكو"},
            {"en": "Hana", "hi": "हाना", "es": "Hana", "zh": "花", "ar": "هانا"},
        ],
        "man": [
            {"en": "Kenji", "hi": "केंजी", "es": "Kenji", "zh": "健二", "ar": "كينجي"},
            {"en": "Hiroshi", "hi": "हिरोशी", "es": "Hiroshi", "zh": "浩", "ar": "هيروشي"},
            {"en": "Takeshi", "hi": "ताकेशी", "es": "Takeshi", "zh": "武", "ar": "تاكيشي"},
            {"en": "Haruto", "hi": "हारुतो", "es": "Haruto", "zh": "阳翔", "ar": "هاروتو"},
        ],
    },
    "arab": {
        "woman": [
            {"en": "Fatima", "hi": "फ़ातिमा", "es": "Fátima", "zh": "法蒂玛", "ar": "فاطمة"},
            {"en": "Aisha", "hi": "आयशा", "es": "Aisha", "zh": "阿伊莎", "ar": "عائشة"},
            {"en": "Layla", "hi": "लैला", "es": "Layla", "zh": "莱拉", "ar": "ليلى"},
            {"en": "Mariam", "hi": "मरियम", "es": "Mariam", "zh": "玛丽亚姆", "ar": "مريم"},
        ],
        "man": [
            {"en": "Ahmed", "hi": "अहमद", "es": "Ahmed", "zh": "艾哈迈德", "ar": "أحمد"},
            {"en": "Omar", "hi": "उमर", "es": "Omar", "zh": "奥马尔", "ar": "عمر"},
            {"en": "Youssef", "hi": "यूसुफ़", "es": "Youssef", "zh": "优素福", "ar": "يوسف"},
            {"en": "Khalid", "hi": "ख़ालिद", "es": "Khalid", "zh": "哈立德", "ar": "خالد"},
        ],
    },
    "hispanic": {
        "woman": [
            {"en": "María", "hi": "मारिया", "es": "María", "zh": "玛丽亚", "ar": "ماريا"},
            {"en": "Lucía", "hi": "लूसिया", "es": "Lucía", "zh": "露西亚", "ar": "لوسيا"},
            {"en": "Carmen", "hi": "कारमेन", "es": "Carmen", "zh": "卡门", "ar": "كارمن"},
            {"en": "Sofía", "hi": "सोफ़िया", "es": "Sofía", "zh": "索菲娅", "ar": "صوفيا"},
        ],
        "man": [
            {"en": "José", "hi": "होसे", "es": "José", "zh": "何塞", "ar": "خوسيه"},
            {"en": "Carlos", "hi": "कार्लोस", "es": "Carlos", "zh": "卡洛斯", "ar": "كارلوس"},
            {"en": "Diego", "hi": "डिएगो", "es": "Diego", "zh": "迭戈", "ar": "دييغو"},
            {"en": "Javier", "hi": "हावियर", "es": "Javier", "zh": "哈维尔", "ar": "خافيير"},
        ],
    },
    "anglo": {
        "woman": [
            {"en": "Emily", "hi": "एमिली", "es": "Emily", "zh": "艾米丽", "ar": "إميلي"},
            {"en": "Sarah", "hi": "सारा", "es": "Sarah", "zh": "莎拉", "ar": "سارة"},
            {"en": "Jessica", "hi": "जेसिका", "es": "Jessica", "zh": "杰西卡", "ar": "جيسيكا"},
            {"en": "Emma", "hi": "एम्मा", "es": "Emma", "zh": "艾玛", "ar": "إيما"},
        ],
        "man": [
            {"en": "James", "hi": "जेम्स", "es": "James", "zh": "詹姆斯", "ar": "جيمس"},
            {"en": "Michael", "hi": "माइकल", "es": "Michael", "zh": "迈克尔", "ar": "مايكل"},
            {"en": "John", "hi": "जॉन", "es": "John", "zh": "约翰", "ar": "جون"},
            {"en": "David", "hi": "डेविड", "es": "David", "zh": "大卫", "ar": "ديفيد"},
        ],
    },
    "west_african": {
        "woman": [
            {"en": "Amara", "hi": "अमारा", "es": "Amara", "zh": "阿玛拉", "ar": "أمارا"},
            {"en": "Ngozi", "hi": "न्गोज़ी", "es": "Ngozi", "zh": "恩戈齐", "ar": "نغوزي"},
            {"en": "Adaeze", "hi": "अदाएज़े", "es": "Adaeze", "zh": "阿达埃泽", "ar": "أدايزي"},
            {"en": "Ama", "hi": "आमा", "es": "Ama", "zh": "阿玛", "ar": "أما"},
        ],
        "man": [
            {"en": "Kwame", "hi": "क्वामे", "es": "Kwame", "zh": "夸梅", "ar": "كوامي"},
            {"en": "Chinedu", "hi": "चिनेडु", "es": "Chinedu", "zh": "奇内杜", "ar": "تشينيدو"},
            {"en": "Kofi", "hi": "कोफ़ी", "es": "Kofi", "zh": "科菲", "ar": "كوفي"},
            {"en": "Tunde", "hi": "तुंडे", "es": "Tunde", "zh": "通德", "ar": "توندي"},
        ],
    },
}
CULTURES = tuple(GIVEN_NAMES)


def names_for(culture: str, gender: str) -> list[dict[str, str]]:
    """Names of a culture for a person's gender; a gender-neutral person may carry any of them."""
    by_gender = GIVEN_NAMES[culture]
    if gender in by_gender:
        return by_gender[gender]
    return by_gender["woman"] + by_gender["man"]
