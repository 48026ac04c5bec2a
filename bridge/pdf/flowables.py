"""reportlab flowables the report uses, tuned for speed (pdf.md section 7)."""

from __future__ import annotations

from reportlab.platypus import Paragraph as _Paragraph


class Paragraph(_Paragraph):
    """reportlab's Paragraph, breaking its lines once per width.

    A paragraph in a table cell is wrapped at the same width when the table
    measures its rows and again when it draws them, and a frame may ask
    twice as well; the line breaks depend only on the width (and the style,
    which does not change), so the second answer is the first one.
    """

    _wrapped_width: float | None = None

    def wrap(self, availWidth, availHeight):
        if availWidth == self._wrapped_width:
            return self.width, self.height
        result = super().wrap(availWidth, availHeight)
        self._wrapped_width = availWidth
        return result
