"""The readable A4 report, drawn from the CDA alone (pdf.md section 6).

``render_report(view)`` returns plain PDF bytes (reportlab); PDF/A, the
embedded ``cda.xml`` and the signature are added by :mod:`bridge.pdf.package`.
"""

from __future__ import annotations

import io
import threading
from xml.sax.saxutils import escape

from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.doctemplate import LayoutError

from bridge.errors import BridgeError

from bridge.pdf.view import CdaView
from bridge.pdf.flowables import KeepWithStart
from bridge.pdf.layout import Layout, Styles, make_styles, register_fonts
from bridge.pdf.narrative import NarrativeRenderer

#: reportlab's registered TrueType faces are shared and not thread-safe: subsetting one for two
#: documents at once (the stages on threads, ``workers.processes = 0``) reads the font file
#: through one shared position and fails now and then. One build at a time per process.
_BUILD_LOCK = threading.Lock()


class ReportLayoutError(BridgeError):
    """The narrative could not be laid out on A4 pages (AR 207: not the sender's fault alone)."""


class _PageDecor:
    """Running header and footer; needs the page count, so it is drawn when the document is complete."""

    def __init__(self, layout: Layout, view: CdaView, signer_name: str | None):
        self.layout = layout
        labels = layout.labels
        self.top = " \u2013 ".join(p for p in (view.document_type or view.title, view.patient_name,
                                                view.patient_fiscal_code) if p)
        self.lines = [labels.signed_by.format(signer=signer_name) if signer_name else labels.unsigned,
                      labels.attachment]
        self.doc_id = f"{labels.document_id}: {view.document_id}" if view.document_id else ""

    def draw(self, canvas: Canvas, page: int, pages: int) -> None:
        lay = self.layout
        width, height = lay.page_size
        left, right = lay.margin_left, width - lay.margin_right
        size = lay.footer_size
        canvas.saveState()
        canvas.setStrokeColor(lay.rule)
        canvas.setLineWidth(0.5)
        if page > 1:  # the first page has the full header
            canvas.setFont(lay.font, size)
            canvas.drawString(left, height - lay.margin_top + 6, self.top)
            canvas.line(left, height - lay.margin_top + 3, right, height - lay.margin_top + 3)
        base = lay.margin_bottom - 8
        canvas.line(left, base, right, base)
        canvas.setFont(lay.font, size)
        y = base - size - 2
        for line in self.lines:
            canvas.drawString(left, y, line)
            y -= size + 2
        canvas.drawString(left, y, self.doc_id)
        canvas.drawRightString(right, y, lay.labels.page.format(n=page, m=pages))
        canvas.restoreState()


class _CountingCanvas(Canvas):
    """Keeps each page's state until save() so the footer can say "n of m" in one pass."""

    def __init__(self, *args, decor: _PageDecor, **kwargs):
        super().__init__(*args, **kwargs)
        self._decor = decor
        self._pages: list[dict] = []

    def showPage(self):
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self):
        total = len(self._pages)
        for number, state in enumerate(self._pages, start=1):
            self.__dict__.update(state)
            self._decor.draw(self, number, total)
            super().showPage()
        super().save()


def _header(view: CdaView, layout: Layout, styles: Styles) -> list:
    lab = layout.labels
    title = view.document_type or view.title
    flow = [Paragraph(escape(title), styles.title)]
    if view.title and view.title.casefold() != title.casefold():
        flow.append(Paragraph(escape(view.title), styles.body))
    doc_id = view.document_id + (f" ({lab.version} {view.version})" if view.version else "")
    pairs = [
        (lab.structure, view.structure), (lab.document_date, view.effective_time),
        (lab.patient, view.patient_name), (lab.fiscal_code, view.patient_fiscal_code),
        (lab.birth_date, view.birth_date), (lab.sex, view.sex),
        (lab.author, view.author), (lab.legal_authenticator, view.legal_authenticator),
        (lab.order_id, view.order_id), (lab.prescriber, view.prescriber),
        (lab.document_id, doc_id), (lab.replaces, view.replaces),
    ]
    pairs = [(k, v) for k, v in pairs if v]
    rows = []
    for i in range(0, len(pairs), 2):
        row = []
        for key, value in pairs[i:i + 2]:
            row += [Paragraph(escape(key), styles.label), Paragraph(escape(value), styles.cell)]
        rows.append(row + [""] * (4 - len(row)))
    w = layout.frame_width
    table = Table(rows, colWidths=[0.2 * w, 0.3 * w, 0.2 * w, 0.3 * w], hAlign="LEFT",
                  style=TableStyle([
                      ("FONT", (0, 0), (-1, -1), layout.font, layout.table_size),
                      ("VALIGN", (0, 0), (-1, -1), "TOP"),
                      ("BOX", (0, 0), (-1, -1), 0.6, layout.rule),
                      ("BACKGROUND", (0, 0), (-1, -1), layout.header_fill),
                      ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                  ]))
    return flow + [table, Spacer(1, 6)]


def _body(view: CdaView, narrative: NarrativeRenderer, styles: Styles, width: float) -> list:
    """Every section's title and narrative in order; titles kept with the start of what follows."""
    story: list = []
    heads: list = []  # titles waiting for the first block after them
    for section in view.sections:
        if section.title:
            level = min(section.level, len(styles.headings)) - 1
            heads.append(Paragraph(escape(section.title), styles.headings[level]))
        blocks = narrative.blocks(section.text, width) if section.text is not None else []
        if blocks and heads:
            blocks[0] = KeepWithStart(heads, blocks[0])
            heads = []
        story += blocks
    return story + heads


def render_report(view: CdaView, *, signer_name: str | None = None,
                  layout: Layout | None = None) -> bytes:
    """The report as PDF bytes: header from the CDA header, then every section's narrative in order."""
    layout = layout or Layout()
    register_fonts(layout)
    styles = make_styles(layout)
    narrative = NarrativeRenderer(layout, styles)
    story = _header(view, layout, styles) + _body(view, narrative, styles, layout.frame_width)
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=layout.page_size, leftMargin=layout.margin_left,
        rightMargin=layout.margin_right, topMargin=layout.margin_top,
        bottomMargin=layout.margin_bottom, title=view.document_type or view.title,
        author=view.structure, subject=view.document_type, creator="fse-bridge",
        producer="fse-bridge", invariant=True,
        # uncompressed here: the PDF/A save (bridge.pdf.package) compresses every
        # stream once; reportlab's Flate + ASCII85 would be undone and redone there
        pageCompression=0,
        # the canvas' default font must be the embedded one, or reportlab
        # leaves an unembedded Helvetica in the resources (pdf.md section 7)
        initialFontName=layout.font)
    decor = _PageDecor(layout, view, signer_name)
    try:
        with _BUILD_LOCK:
            doc.build(story, canvasmaker=lambda *a, **kw: _CountingCanvas(*a, decor=decor, **kw))
    except LayoutError:
        # reportlab's message quotes the content: keep patient data out of logs
        raise ReportLayoutError("the CDA narrative cannot be laid out on A4 pages") from None
    return out.getvalue()
