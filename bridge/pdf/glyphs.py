"""The CDA's text as the report's font can draw it.

A character the embedded font has no glyph for is drawn as nothing: a name in
a script the font does not cover would print blank, and nobody would know.
Such a character is printed as ``Layout.missing_glyph`` instead (a visible
box), and counted; the CDA itself, embedded in the PDF, keeps every
character as sent. Text is put in NFC first, because reportlab draws one
glyph per code point: a letter sent decomposed (``e`` + U+0301) prints as
the font's precomposed ``é``.
"""

from __future__ import annotations

import logging
import unicodedata

from lxml import etree
from reportlab.pdfbase import pdfmetrics

from bridge.pdf.layout import Layout, register_fonts

log = logging.getLogger(__name__)


class Glyphs:
    """Which characters the layout's font draws (every face of the family covers the same ones)."""

    def __init__(self, layout: Layout):
        register_fonts(layout)
        self._drawn = pdfmetrics.getFont(layout.font).face.charToGlyph
        self._missing = layout.missing_glyph
        self.replaced = 0

    def _char(self, ch: str) -> str:
        # white space and controls are laid out by reportlab, never drawn
        if ord(ch) in self._drawn or ch.isspace() or unicodedata.category(ch) == "Cc":
            return ch
        if unicodedata.category(ch) == "Cf":
            return ""  # invisible by definition (a BOM, a zero-width joiner): nothing to show
        self.replaced += 1
        return self._missing

    def text(self, text: str) -> str:
        """*text* with every character the font cannot draw replaced."""
        if text.isascii():
            return text  # the font draws ASCII; the common case costs one check
        return "".join(map(self._char, unicodedata.normalize("NFC", text)))

    def tree(self, root: etree._Element) -> etree._Element:
        """Every text, tail and attribute of *root* made drawable, in place; returns *root*."""
        for el in root.iter():
            if el.text:
                el.text = self.text(el.text)
            if el.tail:
                el.tail = self.text(el.tail)
            for name, value in el.attrib.items():
                if not value.isascii():
                    el.set(name, self.text(value))
        if self.replaced:
            # a count only: the characters may be a patient's name
            log.warning("the report shows %d character(s) its font has no glyph for as %r",
                        self.replaced, self._missing)
        return root
