"""CDAs of any shape and length for the long-report tests, and what the PDF must show of them.

A CDA here is an official sample's header with a body of generated sections
(the PDF is drawn from the header and the section narratives alone, pdf.md
section 6). Every text is plain characters, so the test knows exactly what
the pages must say.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from pypdf import PdfReader
from reportlab import rl_config
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import stringWidth

from bridge.pdf.layout import Labels, Layout, register_fonts
from bridge.pdf.view import parse_cda, read_view

from .package_samples import sample

#: Italian letters, digits and what URLs and lab notes carry, markup characters included
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789àèéìòùÀÈÉÌÒÙ’.,;:/-_=?&<>%"
_WS = re.compile(r"\s+")


def squeeze(text: str) -> str:
    """*text* without white space: lines broken anywhere still compare equal."""
    return _WS.sub("", text)


def words(rng: random.Random, length: int, longest: int = 12) -> str:
    """About *length* characters of words of 1..*longest* characters."""
    out, size = [], 0
    while size < length:
        word = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, longest)))
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:length].strip() or "x"


def token(rng: random.Random, length: int) -> str:
    """An unbroken token (a PACS URL) of *length* characters."""
    head = "https://pacs.example.it/viewer?study="
    return (head + "".join(rng.choice(ALPHABET[:62]) for _ in range(max(0, length - len(head)))))[:length]


@dataclass
class Body:
    """Sections as CDA XML, and in reading order what the report must print of them.

    ``open(title)``, then blocks (each returns its XML for ``close``), then ``close(*xml)``.
    """

    xml: list[str] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    """Texts printed whole as paragraphs of the body (each contiguous on the pages)."""
    sequence: list[str] = field(default_factory=list)
    """Every text in reading order (titles, paragraphs, items, cells)."""
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    """Per table: header labels and rows (the first cell of each a unique marker)."""
    _title: str = ""

    def open(self, title: str) -> None:
        self._title = title
        self.sequence.append(title)

    def close(self, *blocks: str) -> None:
        self.xml.append(f"<component><section><title>{escape(self._title)}</title>"
                        f"<text>{''.join(blocks)}</text></section></component>")

    def paragraph(self, text: str) -> str:
        self.paragraphs.append(text)
        self.sequence.append(text)
        return f"<paragraph>{escape(text)}</paragraph>"

    def items(self, texts: list[str], ordered: bool, nested: list[str] = ()) -> str:
        self.sequence.extend(texts)
        inner = "".join(f"<item>{escape(t)}</item>" for t in texts)
        if nested:
            self.sequence.append("sotto")
            inner += "<item>sotto" + self.items(list(nested), not ordered) + "</item>"
        return f'<list listType="{"ordered" if ordered else "unordered"}">{inner}</list>'

    def table(self, header: list[str], rows: list[list[str]]) -> str:
        """The table and a marker paragraph after it: where its last row ends on the pages.

        In the sequence a table is its header and row markers: a row split
        inside it prints the first part of every cell, then (overleaf) the
        rest of every cell, so its cells are checked by table_rows instead.
        """
        number = len(self.tables)
        self.tables.append((header, rows))
        self.sequence.extend(header + [r[0] for r in rows])
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                + self.paragraph(table_end(number)))


def table_end(number: int) -> str:
    return f"#END{number}#"


def cda_with_body(sections_xml: list[str], base: str = "RSA") -> bytes:
    """The *base* sample with its structuredBody made of *sections_xml*."""
    text = sample(base).decode("utf-8")
    start = text.index("<structuredBody")
    start = text.index(">", start) + 1
    end = text.index("</structuredBody>")
    return (text[:start] + "".join(sections_xml) + text[end:]).encode("utf-8")


# ------------------------------------------------------------------ the pages

def decorations(cda: bytes, signer_name: str | None, pages: int) -> list[list[str]]:
    """Per page, the running header and footer lines render.py draws (squeezed)."""
    view = read_view(parse_cda(cda))
    labels = Labels()
    top = " \u2013 ".join(p for p in (view.document_type or view.title, view.patient_name,
                                       view.patient_fiscal_code) if p)
    lines = [labels.signed_by.format(signer=signer_name) if signer_name else labels.unsigned,
             labels.attachment, f"{labels.document_id}: {view.document_id}"]
    return [[squeeze(x) for x in lines + ([top] if n > 1 else []) + [labels.page.format(n=n, m=pages)]]
            for n in range(1, pages + 1)]


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def _faces(layout: Layout) -> dict[str, str]:
    """The PDF's font names (the TrueType faces' PostScript names) -> reportlab's registered names."""
    names = (layout.font, f"{layout.font}-Bold", f"{layout.font}-Italic", f"{layout.font}-BoldItalic")
    return {pdfmetrics.getFont(n).face.name.decode(): n for n in names}


@dataclass
class Pages:
    """What pypdf reads on the pages of a report (one pass: reading is the slow part)."""

    body: list[str]
    """Each page's text squeezed, its running header and footer taken out."""
    overflowing: list[tuple[int, float, str]]
    """Lines of text that start left of the frame or end right of it: (page, right edge, text)."""
    lines: list[tuple[int, float, float, str]]
    """Every line of text: (page, left edge, right edge, text)."""


def read_pages(pdf: bytes, cda: bytes, signer_name: str | None, layout: Layout = Layout()) -> Pages:
    register_fonts(layout)
    faces = _faces(layout)
    left, right = layout.margin_left, layout.page_size[0] - layout.margin_right
    pages = PdfReader(io.BytesIO(pdf)).pages
    body, overflowing, lines = [], [], []
    for number, (page, decor) in enumerate(zip(pages, decorations(cda, signer_name, len(pages))), start=1):
        pieces = []

        def visit(text, cm, tm, font, size, number=number):
            pieces.append(text)
            text = text.rstrip("\n")
            if not text.strip() or font is None:
                return
            face = faces.get(str(font.get("/BaseFont", "")).split("+")[-1].lstrip("/"), layout.font)
            x = cm[4] + tm[4] * cm[0]
            # reportlab fits a line by shrinking its spaces up to spaceShrinkage (drawn with a
            # negative word spacing that text extraction does not report)
            shrunk = rl_config.spaceShrinkage * stringWidth(" ", face, size) * (text.count(" ") + 1)
            end = x + (stringWidth(text, face, size) - shrunk) * cm[0]
            lines.append((number, x, end, text))
            if x < left - 1 or end > right + 1:
                overflowing.append((number, round(end, 1), text[:60]))

        page.extract_text(visitor_text=visit)
        text = squeeze("".join(pieces))
        for line in decor:
            assert line in text, (line, text[-300:])
            text = text.replace(line, "", 1)
        body.append(text)
    return Pages(body, overflowing, lines)


def is_subsequence(needles: list[str], haystack: str) -> bool:
    """Whether the texts appear in *haystack* in order, each possibly interrupted."""
    chars = iter(haystack)
    return all(ch in chars for text in needles for ch in squeeze(text))
