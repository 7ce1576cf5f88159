"""Text normalisation: NFC, invisible characters, full-width policy, whitespace."""

from __future__ import annotations

import unicodedata

import pytest

from converters.text import collapse_whitespace, has_cjk, normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  A  red\tcircle. ", "A red circle."),
        ("line one  \r\n\r\n\r\n\r\nline two", "line one\n\nline two"),
        ("Ｔｈｅ ｃａｔ（ｂｌａｃｋ）！", "The cat(black)!"),
        ("一只猫，坐在ＰＣ上。", "一只猫，坐在PC上。"),
        ("价格：１２３元（含税）", "价格：123元（含税）"),
        ("カメラ\u3000です", "カメラ です"),
        ("zero\u200bwidth\ufeff and soft\u00adhyphen", "zerowidth and softhyphen"),
        ("e\u0301te\u0301", "été"),
        ("control\x07 char", "control char"),
        ("non\u00a0breaking", "non breaking"),
        ("\u3000\u200b  ", ""),
    ],
)
def test_normalize_text_follows_the_policy(raw: str, expected: str) -> None:
    result = normalize_text(raw)
    assert result == expected
    assert unicodedata.is_normalized("NFC", result)


def test_fullwidth_folding_can_be_switched_off() -> None:
    assert normalize_text("Ｔｈｅ　cat", fullwidth=False) == "Ｔｈｅ cat"


def test_only_whitespace_is_tidied_by_collapse_whitespace() -> None:
    assert collapse_whitespace("  Ｔｈｅ\t\tcat \r\n\n\n\nend ") == "Ｔｈｅ cat\n\nend"


def test_cjk_detection() -> None:
    assert has_cjk("一") and has_cjk("ひらがな") and has_cjk("한국어")
    assert not has_cjk("plain ASCII, ｆｕｌｌ－ｗｉｄｔｈ")
