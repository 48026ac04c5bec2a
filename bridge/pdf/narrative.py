"""CDA narrative blocks (``section/text``) as reportlab flowables.

The narrative is the attested, human-readable content of a CDA (CDA R2,
section 4.3.5; pdf.md section 6), so it is printed as the CDA holds it:
paragraphs stay paragraphs, lists stay lists and tables stay tables (for
LAB the results table with units, reference ranges and flags). Nothing is
added that the narrative does not say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import Flowable, Paragraph, Spacer, TableStyle

from bridge.pdf.flowables import KeepWithStart, ReportTable
from bridge.pdf.view import NS
from bridge.pdf.layout import Layout, Styles

_INLINE_STYLE = {"bold": "b", "italics": "i", "underline": "u"}
_WS = re.compile(r"\s+")


def _local(el) -> str:
    tag = el.tag
    if not isinstance(tag, str):  # comments, processing instructions
        return ""
    return tag[len(NS) + 2:] if tag.startswith(f"{{{NS}}}") else tag.rsplit("}", 1)[-1]


def _plain(text: str | None) -> str:
    return escape(_WS.sub(" ", text)) if text else ""


@dataclass
class NarrativeRenderer:
    """Turns one narrative element into flowables; one instance per report."""

    layout: Layout
    styles: Styles
    _list_styles: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- inline

    def inline(self, el) -> str:
        """Paragraph markup for the text and inline children of *el* (tails excluded)."""
        out = [_plain(el.text)]
        for child in el:
            out.append(self._inline_child(child))
            out.append(_plain(child.tail))
        return "".join(out)

    def _inline_child(self, child) -> str:
        name = _local(child)
        if name == "br":
            return "<br/>"
        inner = self.inline(child)
        if name == "content":
            for code in (child.get("styleCode") or "").split():
                tag = _INLINE_STYLE.get(code.lower())
                if tag:
                    inner = f"<{tag}>{inner}</{tag}>"
            return inner
        if name == "sup":
            return f"<super>{inner}</super>"
        if name == "sub":
            return f"<sub>{inner}</sub>"
        if name in ("footnote", "footnoteRef"):
            return f" [{inner or escape(child.get('IDREF') or '')}]"
        if name == "renderMultiMedia":
            return escape(self.layout.labels.multimedia)
        # linkHtml and anything unknown: its text, never dropped
        return inner

    # ----------------------------------------------------------------- blocks

    def blocks(self, el, width: float, style: ParagraphStyle | None = None,
               bullet: str | None = None) -> list[Flowable]:
        """Flowables for a container (``text``, ``td``, ``item``...); *bullet* marks the first paragraph."""
        style = style or self.styles.body
        flowables: list[Flowable] = []
        pending = [_plain(el.text)]

        def flush():
            markup = "".join(pending).strip()
            pending.clear()
            if markup and markup != "<br/>":
                first = bullet if not flowables else None
                flowables.append(Paragraph(markup, style, bulletText=first))

        for child in el:
            name = _local(child)
            if name in ("paragraph", "list", "table"):
                flush()
                if name == "paragraph":
                    flowables += self._paragraph(child, width, style, bullet if not flowables else None)
                else:
                    flowables += getattr(self, f"_{name}")(child, width, style)
            elif name == "caption":
                pass  # printed by its block
            elif name:
                pending.append(self._inline_child(child))
            pending.append(_plain(child.tail))
        flush()
        return flowables

    def _caption(self, el) -> list[Flowable]:
        caption = el.find(f"{{{NS}}}caption")
        if caption is None:
            return []
        markup = self.inline(caption).strip()
        return [Paragraph(markup, self.styles.caption)] if markup else []

    def _paragraph(self, el, width, style, bullet: str | None = None) -> list[Flowable]:
        caption = el.find(f"{{{NS}}}caption")
        if caption is None:
            markup = self.inline(el).strip()
        else:  # the caption in bold, then the rest of the paragraph
            rest = _plain(el.text) + "".join(
                (_plain(c.tail) if c is caption else self._inline_child(c) + _plain(c.tail)) for c in el)
            markup = f"<b>{self.inline(caption).strip()}</b> {rest.strip()}".strip()
        return [Paragraph(markup, style, bulletText=bullet)] if markup else []

    def _list_style(self, parent: ParagraphStyle) -> ParagraphStyle:
        if parent.name not in self._list_styles:
            indent = parent.leftIndent + 12
            self._list_styles[parent.name] = ParagraphStyle(
                f"{parent.name}-li", parent=parent, leftIndent=indent, bulletIndent=indent - 9,
                bulletFontName=parent.fontName, spaceAfter=1)
        return self._list_styles[parent.name]

    def _list(self, el, width, style) -> list[Flowable]:
        flowables = self._caption(el)
        ordered = (el.get("listType") or "").lower() == "ordered"
        item_style = self._list_style(style)
        for n, item in enumerate(el.iterfind(f"{{{NS}}}item"), start=1):
            bullet = f"{n}." if ordered else "\u2022"
            flowables += self.blocks(item, width - item_style.leftIndent, item_style, bullet=bullet)
        return flowables

    @staticmethod
    def _is_inline(el) -> bool:
        return all(_local(c) not in ("paragraph", "list", "table") for c in el)

    @staticmethod
    def _header_rows(rows) -> int:
        """Leading rows of thead, or made of th cells only: repeated on every page of the table."""
        count = 0
        for tr, in_thead in rows:
            cells = [c for c in tr if _local(c) in ("td", "th")]
            if not (in_thead or (cells and all(_local(c) == "th" for c in cells))):
                break
            count += 1
        return count

    def _table(self, el, width, style) -> list[Flowable]:
        caption = self._caption(el)
        rows = []
        for part in el:
            name = _local(part)
            if name in ("thead", "tbody", "tfoot"):
                rows += [(r, name == "thead") for r in part.iterfind(f"{{{NS}}}tr")]
            elif name == "tr":
                rows.append((part, False))
        if not rows:
            return caption
        header_rows = self._header_rows(rows)
        grid, spans, texts = self._grid(rows)
        ncols = max(len(r) for r in grid)
        widths = self._column_widths(texts, ncols, width)
        data = []
        for r, row in enumerate(grid):
            cells = []
            for c in range(ncols):
                cell = row[c] if c < len(row) else None
                if cell is None:
                    cells.append("")
                    continue
                is_header = _local(cell) == "th" or rows[r][1]
                cstyle = self.styles.header_cell if is_header else self.styles.cell
                if self._is_inline(cell):
                    markup = self.inline(cell).strip()
                    cells.append(Paragraph(markup, cstyle) if markup else "")
                else:
                    cells.append(_in_cell(self.blocks(cell, widths[c] - 6, cstyle)))
            data.append(cells)
        commands = [
            ("FONT", (0, 0), (-1, -1), self.layout.font, self.layout.table_size),
            ("GRID", (0, 0), (-1, -1), 0.4, self.layout.rule),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 3),
            ("RIGHTPADDING", (0, 0), (-1, -1), 3),
            ("TOPPADDING", (0, 0), (-1, -1), 2),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ]
        if header_rows:
            commands.append(("BACKGROUND", (0, 0), (-1, header_rows - 1), self.layout.header_fill))
        commands += [("SPAN", a, b) for a, b in spans]
        # splitInRow: a cell longer than a page continues on the next one
        repeat = header_rows if header_rows < len(data) else 0  # nothing to repeat them over
        table = ReportTable(data, colWidths=widths, repeatRows=repeat, hAlign="LEFT", splitInRow=1,
                            style=TableStyle(commands))
        table.row_split_min = self.layout.row_split_min
        return [KeepWithStart(caption, table) if caption else table, Spacer(1, 4)]

    @staticmethod
    def _grid(rows):
        """Cells placed on a grid honouring colspan/rowspan; also per column the plain text of
        each cell and whether it prints in bold (a header cell)."""
        grid: list[list] = []
        spans = []
        texts: dict[int, list[tuple[str, bool]]] = {}
        taken: set[tuple[int, int]] = set()
        for r, (tr, in_thead) in enumerate(rows):
            while len(grid) <= r:
                grid.append([])
            c = 0
            for cell in tr:
                if _local(cell) not in ("td", "th"):
                    continue
                while (r, c) in taken:
                    c += 1
                colspan = max(1, _int(cell.get("colspan")))
                rowspan = max(1, _int(cell.get("rowspan")))
                for rr in range(r, r + rowspan):
                    for cc in range(c, c + colspan):
                        taken.add((rr, cc))
                row = grid[r]
                row.extend([None] * (c + 1 - len(row)))
                row[c] = cell
                if colspan > 1 or rowspan > 1:
                    spans.append(((c, r), (c + colspan - 1, r + rowspan - 1)))
                if colspan == 1:
                    text = _WS.sub(" ", "".join(cell.itertext())).strip()
                    texts.setdefault(c, []).append((text, in_thead or _local(cell) == "th"))
                c += colspan
        width = max((cc + 1 for _, cc in taken), default=1)
        last_row = max((rr + 1 for rr, _ in taken), default=len(grid))
        while len(grid) < last_row:
            grid.append([])
        for row in grid:
            row.extend([None] * (width - len(row)))
        return grid, spans, texts

    def _column_widths(self, texts: dict[int, list[tuple[str, bool]]], ncols: int,
                       width: float) -> list[float]:
        """Widths that fit the table in *width* and starve no column (issue 13).

        A column needs its longest word. A token wider than a third of the
        width (a 400-character URL) breaks anywhere inside its cell (the
        styles' splitLongWords), so its column needs only an equal share
        instead of squeezing the other columns to a letter per line. When the
        needs do not fit, the words of the data come first and header words
        may break; when even those do not fit, they shrink in proportion,
        none below a floor (three letters' width, or the equal share). A
        column wants its longest text on one line, at most half the width;
        what is left above the needs goes to the columns in proportion to
        what they want more.
        """
        size, pad = self.layout.table_size, 7
        faces = {False: self.layout.font, True: f"{self.layout.font}-Bold"}
        fair = width / ncols
        floor = min(fair, 3 * size + pad)

        def need(cells) -> float:
            longest = max((stringWidth(w, faces[b], size) for t, b in cells for w in t.split()), default=0)
            word = max(longest, 3 * size) + pad
            return word if word <= max(fair, width / 3) else fair

        columns = [texts.get(c, []) for c in range(ncols)]
        words = [need(cells) for cells in columns]
        data = [need([(t, b) for t, b in cells if not b]) for cells in columns]
        wanted = [max(min(max((stringWidth(t, faces[b], size) for t, b in cells), default=0) + pad,
                          width / 2 if ncols > 1 else width), w) for cells, w in zip(columns, words)]
        if sum(words) <= width:
            return _share(words, wanted, width)
        if sum(data) <= width:
            return _share(data, words, width)
        return _raise_to_floor([d * width / sum(data) for d in data], floor)


def _in_cell(flowables: list[Flowable]) -> list[Flowable]:
    """*flowables* for a table cell: a caption kept with its table is a page matter, and a cell
    is drawn whole (reportlab's keep-together flowables draw nothing there)."""
    return [f for block in flowables for f in (block.parts if isinstance(block, KeepWithStart) else [block])]


def _raise_to_floor(widths: list[float], floor: float) -> list[float]:
    """Columns below *floor* raised to it, taken from the others in proportion to what they have
    above it (len(widths) * floor <= sum(widths), so none falls below)."""
    deficit = sum(max(0.0, floor - w) for w in widths)
    if not deficit:
        return widths
    excess = [max(0.0, w - floor) for w in widths]
    return [floor if w <= floor else w - deficit * e / sum(excess) for w, e in zip(widths, excess)]


def _share(need: list[float], wanted: list[float], width: float) -> list[float]:
    """*need* widened towards *wanted* within *width* (sum(need) <= width)."""
    room = width - sum(need)
    extra = [w - n for w, n in zip(wanted, need)]
    if sum(extra) <= room:  # everything fits on one line: share the rest equally
        return [w + (room - sum(extra)) / len(need) for w in wanted]
    return [n + room * e / sum(extra) for n, e in zip(need, extra)]


def _int(value: str | None) -> int:
    try:
        return int(value or 1)
    except ValueError:
        return 1
