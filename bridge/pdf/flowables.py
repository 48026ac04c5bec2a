"""reportlab flowables of the report that reportlab does not have.

No wrap caches here: reportlab's Paragraph keeps its line breaks in state
that ``split`` changes (it drops ``blPara`` when a paragraph moves to the
next page), so a wrap answered from a cache left a split paragraph without
its lines (issue 13: ``'Paragraph' object has no attribute 'blPara'``).
"""

from __future__ import annotations

from reportlab.platypus import Flowable, KeepTogether, Table
from reportlab.platypus.doctemplate import FrameBreak


class KeepWithStart(KeepTogether):
    """Headings (or a caption) kept with the *start* of the block that follows.

    reportlab's keepWithNext keeps a heading with the whole next block, so a
    table or a paragraph taller than what is left of the page moved to the
    next one with its heading and left the page above half empty (the report
    header alone on page 1). Here the heads move to the next page only when
    they and the first piece of the block (a table's header rows and first
    row, two lines of a paragraph: whatever the block's own split gives) do
    not fit; otherwise the block starts under them and continues overleaf.
    """

    def __init__(self, heads: list[Flowable], body: Flowable):
        super().__init__([*heads, body])
        self._heads = list(heads)
        self._body = body

    @property
    def parts(self) -> list[Flowable]:
        """The heads and the body, for where there are no pages to keep them on (a table cell)."""
        body = self._body.parts if isinstance(self._body, KeepWithStart) else [self._body]
        return [*self._heads, *body]

    def wrap(self, aW, aH):
        # never drawn whole: the frame splits it into its parts (see split)
        return aW, 0xFFFFFF

    def split(self, aW, aH):
        parts = [*self._heads, self._body]
        frame = getattr(self, "_frame", None)
        if (frame is not None and frame._atTop) or self.start_fits(self.canv, aW, aH, frame):
            return parts
        return [FrameBreak(), *parts]

    def start_fits(self, canv, aW, aH, frame) -> bool:
        """Whether the heads and the first piece of the body fit in *aH* of *frame*."""
        room = aH
        for head in self._heads:
            room -= head.getSpaceBefore() + head.wrapOn(canv, aW, room)[1] + head.getSpaceAfter()
        return room > 0 and starts_within(self._body, canv, aW, room, frame)


def starts_within(flowable: Flowable, canv, aW, aH, frame) -> bool:
    """Whether *flowable*, or the first piece of its own split where *frame* is, fits in *aH*."""
    if isinstance(flowable, KeepWithStart):
        return flowable.start_fits(canv, aW, aH, frame)
    aH -= flowable.getSpaceBefore()
    if aH <= 0:
        return False
    if flowable.wrapOn(canv, aW, aH)[1] <= aH:
        return True
    flowable._frame = frame  # a ReportTable splits by where it is (see there)
    try:
        return bool(flowable.splitOn(canv, aW, aH))
    finally:
        del flowable._frame


class ReportTable(Table):
    """reportlab's Table, split so that its repeated header row only ever starts a page.

    reportlab splits a table between rows and tries the rest (under its
    repeated header row) again below the part that fit: when the first row
    of the rest does not fit there, it splits inside that row, and the
    header row prints again in the middle of the page. Here the choice is
    made once, where the page ends: a row up to ``row_split_min`` tall moves
    whole to the next page, a taller one (a long comment, a long token)
    splits there and continues under the header row overleaf; the rest of a
    table never starts below other content on the same page.
    """

    # Table._calc, _getFirstPossibleSplitRowPosition and _splitRows(doInRowSplit) are the
    # ones Table.split itself uses, the same from reportlab 4.0 (setup.cfg's floor) to 5.1.
    row_split_min: float = 72.0
    _continued = False
    """A part after the first: its header row must start a page."""

    def split(self, aW, aH):
        frame = getattr(self, "_frame", None)
        at_top = frame is None or frame._atTop  # no frame: inside a table cell
        if self._continued and not at_top:
            return []
        self._calc(aW, aH)
        moved = self._getFirstPossibleSplitRowPosition(aH)  # the first row that does not fit
        tall = moved < len(self._rowHeights) and self._rowHeights[moved] > self.row_split_min
        parts = self._splitRows(aH, doInRowSplit=True) if tall else []
        parts = parts or self._splitRows(aH, doInRowSplit=False)
        if not parts and at_top:  # a row taller than the page
            parts = self._splitRows(aH, doInRowSplit=True)
        for part in parts[1:]:
            part._continued = True
            part.row_split_min = self.row_split_min
        return parts
