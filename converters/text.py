"""Text normalisation for answers, captions and questions.

Policy (applied by :func:`normalize_text`, in this order):

1. Unicode NFC. Not NFKC: NFKC would also rewrite CJK punctuation, circled digits, ligatures and the like,
   which changes what annotators wrote.
2. Invisible characters go: zero-width spaces and joiners, the BOM, soft hyphens and C0/C1 control characters
   (tab and newline are kept); ``\\r\\n`` and ``\\r`` become ``\\n``.
3. Full-width forms (U+FF01..U+FF5E):
   - full-width Latin letters and digits (``Ａ``, ``ｚ``, ``７``) always become ASCII: they are typing accidents
     of CJK input methods and only fragment the tokenizer's vocabulary;
   - full-width punctuation (``，``, ``？``, ``（``) becomes ASCII only when the text has no CJK character; in
     CJK text it is the correct punctuation and is kept. ASCII punctuation is never turned full-width.
   - the ideographic space U+3000 and the no-break space become a plain space.
4. Whitespace: runs of spaces and tabs become one space, lines are stripped, three or more line breaks
   become two, and the text is stripped.

Example::

    >>> normalize_text("  Ｔｈｅ  ｃａｔ（ｂｌａｃｋ）\\u200b ")
    'The cat(black)'
    >>> normalize_text("一只猫，坐在ＰＣ上。")
    '一只猫，坐在PC上。'
"""

from __future__ import annotations

import re
import unicodedata

_INVISIBLE = dict.fromkeys(
    [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD]
    + [c for c in range(0x00, 0x20) if c not in (0x09, 0x0A)]
    + list(range(0x7F, 0xA0)),
)
_SPACES = {0x3000: " ", 0x00A0: " ", 0x202F: " "}
_FULLWIDTH_ALNUM = {c: chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F) if chr(c - 0xFEE0).isalnum()}
_FULLWIDTH_PUNCT = {c: chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F) if not chr(c - 0xFEE0).isalnum()}
_CJK = re.compile(
    "[\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]"
)
_HSPACE = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def has_cjk(text: str) -> bool:
    """True when ``text`` holds a Chinese, Japanese or Korean character."""
    return _CJK.search(text) is not None


def normalize_text(text: str, *, fullwidth: bool = True) -> str:
    """Normalise ``text`` as the module docstring describes; ``fullwidth=False`` skips step 3's width folding.

    Never raises for a ``str``; the result may be empty.
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_INVISIBLE).translate(_SPACES)
    if fullwidth:
        text = text.translate(_FULLWIDTH_ALNUM)
        if not has_cjk(text):
            text = text.translate(_FULLWIDTH_PUNCT)
    lines = [_HSPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def collapse_whitespace(text: str) -> str:
    """Only step 4 (whitespace) of the policy, for when normalisation is switched off."""
    lines = [_HSPACE.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
