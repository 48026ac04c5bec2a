"""The look of the printed report: page, fonts, sizes, colours and Italian labels.

Change the report's appearance here; rendering code reads only this.
pdf.md section 6: A4, embedded fonts covering Italian letters, text as text,
at least 7.5 pt in tables. The font is Lato 2 (OFL), installed as the
fontpkg-lato package, so no system font is needed and PDF/A finds every font
embedded: it draws every Latin letter a resident's name may carry (Romanian,
Polish, Czech, Hungarian, Turkish, Vietnamese...), Greek and Cyrillic, where
the Latin-1 faces shipped inside reportlab left those letters blank.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import fontpkg_lato
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

#: Family name -> its (regular, bold, italic, bold italic) TrueType files.
FONT_FILES = {"Lato": tuple(Path(fontpkg_lato.ROOT, "files", f"Lato-{face}.ttf")
                            for face in ("Regular", "Bold", "Italic", "BoldItalic"))}


@dataclass(frozen=True)
class Labels:
    """Every fixed text of the report (Italian)."""

    structure: str = "Struttura"
    patient: str = "Paziente"
    fiscal_code: str = "Codice fiscale"
    birth_date: str = "Data di nascita"
    sex: str = "Sesso"
    document_id: str = "Identificativo documento"
    version: str = "Versione"
    document_date: str = "Data documento"
    author: str = "Autore"
    legal_authenticator: str = "Firmatario (autenticatore legale)"
    order_id: str = "Richiesta"
    prescriber: str = "Medico prescrittore"
    replaces: str = "Sostituisce il documento"
    signed_by: str = "Documento firmato digitalmente (PAdES) da {signer}."
    unsigned: str = "Documento non firmato."
    attachment: str = "La versione strutturata HL7 CDA del documento è allegata al PDF (cda.xml)."
    page: str = "Pagina {n} di {m}"
    multimedia: str = "[contenuto multimediale non riprodotto]"


@dataclass(frozen=True)
class Layout:
    page_size: tuple[float, float] = A4
    margin_left: float = 18 * mm
    margin_right: float = 18 * mm
    margin_top: float = 16 * mm
    margin_bottom: float = 22 * mm
    font: str = "Lato"
    body_size: float = 9.5
    table_size: float = 7.5
    title_size: float = 15
    heading_sizes: tuple[float, ...] = (12, 10.5, 9.5)
    footer_size: float = 7.5
    row_split_min: float = 72
    """Table rows up to this tall move whole to the next page; taller ones split where it ends."""
    accent: colors.Color = colors.HexColor("#1F4E79")
    rule: colors.Color = colors.HexColor("#9DB3C8")
    header_fill: colors.Color = colors.HexColor("#E4ECF4")
    labels: Labels = field(default_factory=Labels)
    missing_glyph: str = "\u25a1"
    """Printed for a character the font has no glyph for (a white square, as screens show one)."""

    frame_padding: float = 6
    """reportlab's frame keeps this much inside the margins on every side."""

    @property
    def frame_width(self) -> float:
        """The width text and tables may fill (tables as wide as the margins overflowed them)."""
        return self.page_size[0] - self.margin_left - self.margin_right - 2 * self.frame_padding


#: reportlab's font registry is process-wide; reports are rendered on worker
#: threads, so the first registration must not be seen half done.
_REGISTRATION = threading.Lock()


def register_fonts(layout: Layout) -> None:
    """Register the TrueType family once per process (reportlab keeps a registry)."""
    family = layout.font
    names = (family, f"{family}-Bold", f"{family}-Italic", f"{family}-BoldItalic")
    with _REGISTRATION:
        if family in pdfmetrics.getRegisteredFontNames():
            return
        # faces first, the plain name last: it is what the check above looks for
        for name, file in reversed(list(zip(names, FONT_FILES[family]))):
            pdfmetrics.registerFont(TTFont(name, str(file)))
        # the family lets <b> and <i> in paragraphs pick the embedded faces
        pdfmetrics.registerFontFamily(family, normal=names[0], bold=names[1], italic=names[2],
                                      boldItalic=names[3])


@dataclass(frozen=True)
class Styles:
    title: ParagraphStyle
    headings: tuple[ParagraphStyle, ...]
    body: ParagraphStyle
    label: ParagraphStyle
    cell: ParagraphStyle
    header_cell: ParagraphStyle
    caption: ParagraphStyle
    footer: ParagraphStyle


def make_styles(layout: Layout) -> Styles:
    f, fb = layout.font, f"{layout.font}-Bold"
    body = ParagraphStyle("body", fontName=f, fontSize=layout.body_size,
                          leading=layout.body_size * 1.3, spaceAfter=3)
    headings = tuple(
        ParagraphStyle(f"h{i + 1}", parent=body, fontName=fb, fontSize=size, leading=size * 1.3,
                       spaceBefore=8 if i == 0 else 5, spaceAfter=3, textColor=layout.accent)
        for i, size in enumerate(layout.heading_sizes))
    return Styles(
        title=ParagraphStyle("title", parent=body, fontName=fb, fontSize=layout.title_size,
                             leading=layout.title_size * 1.25, textColor=layout.accent, spaceAfter=4),
        headings=headings,
        body=body,
        label=ParagraphStyle("label", parent=body, fontName=fb, fontSize=layout.table_size + 0.5,
                             leading=(layout.table_size + 0.5) * 1.25, spaceAfter=0,
                             textColor=layout.accent),
        cell=ParagraphStyle("cell", parent=body, fontSize=layout.table_size,
                            leading=layout.table_size * 1.25, spaceAfter=0),
        header_cell=ParagraphStyle("header_cell", parent=body, fontName=fb, fontSize=layout.table_size,
                                   leading=layout.table_size * 1.25, spaceAfter=0),
        caption=ParagraphStyle("caption", parent=body, fontName=f"{layout.font}-Italic", spaceAfter=2),
        footer=ParagraphStyle("footer", parent=body, fontSize=layout.footer_size,
                              leading=layout.footer_size * 1.25, spaceAfter=0),
    )
