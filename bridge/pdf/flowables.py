"""reportlab flowables of the report that reportlab does not have.

No wrap caches here: reportlab's Paragraph keeps its line breaks in state
that ``split`` changes (it drops ``blPara`` when a paragraph moves to the
next page), so a wrap answered from a cache left a split paragraph without
its lines (issue 13: ``'Paragraph' object has no attribute 'blPara'``).
"""

from __future__ import annotations

from reportlab.platypus import Flowable, KeepTogether
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

    def wrap(self, aW, aH):
        # never drawn whole: the frame splits it into its parts (see split)
        return aW, 0xFFFFFF

    def split(self, aW, aH):
        parts = [*self._heads, self._body]
        frame = getattr(self, "_frame", None)
        if (frame is not None and frame._atTop) or self.start_fits(self.canv, aW, aH):
            return parts
        return [FrameBreak(), *parts]

    def start_fits(self, canv, aW, aH) -> bool:
        """Whether the heads and the first piece of the body fit in *aH*."""
        room = aH
        for head in self._heads:
            room -= head.getSpaceBefore() + head.wrapOn(canv, aW, room)[1] + head.getSpaceAfter()
        return room > 0 and starts_within(self._body, canv, aW, room)


def starts_within(flowable: Flowable, canv, aW, aH) -> bool:
    """Whether *flowable*, or the first piece of its own split, fits in *aH*."""
    if isinstance(flowable, KeepWithStart):
        return flowable.start_fits(canv, aW, aH)
    aH -= flowable.getSpaceBefore()
    if aH <= 0:
        return False
    if flowable.wrapOn(canv, aW, aH)[1] <= aH:
        return True
    return bool(flowable.splitOn(canv, aW, aH))
