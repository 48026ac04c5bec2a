"""The printed report: CDA header and narratives read into a view, then drawn with reportlab.

    view.py       parse_cda, read_view: what the report shows (no reportlab)
    layout.py     page, fonts, sizes, colours, Italian labels: adapt the look here
    glyphs.py     the CDA's text as the font can draw it (a box for a missing glyph)
    narrative.py  section/text (paragraph, list, table, content...) to flowables
    flowables.py  KeepWithStart: a title kept with the start of its block, not all of it
    render.py     render_report(view) -> PDF bytes
"""
