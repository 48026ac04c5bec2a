"""Reports of any length (issue 13 item 1): paragraphs, tables and tokens longer than a page or a cell.

Each test packages a CDA (render, PDF/A-3b, cda.xml, PAdES) and reads the
pages back with pypdf: nothing is dropped where a paragraph or a table
splits, table headers repeat, no line leaves the frame, and the page count
follows the content.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from reportlab.lib.units import mm

from bridge.pdf import package
from bridge.pdf.layout import Layout, make_styles, register_fonts
from bridge.pdf.narrative import NarrativeRenderer

from .long_reports import (Body, Pages, cda_with_body, is_subsequence, page_texts, read_pages, squeeze, table_end,
                           token, words)
from .package_samples import sample

#: Hypothesis budget for CI: each example packages a report of up to ~60 KB of text.
CI = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
              print_blob=True)


def packaged_pages(cda: bytes, signer) -> Pages:
    """The pages of the signed package of *cda* (checked to carry it)."""
    pdf = package.package_pdf(cda, signer)
    assert package.extract_cda(pdf) == cda
    return read_pages(pdf, cda, signer.display_name)


def check_everything_printed(body: Body, read: Pages) -> None:
    pages = read.body
    text = "".join(pages)
    for paragraph in body.paragraphs:  # contiguous: nothing lost or moved where it splits
        assert squeeze(paragraph) in text, paragraph[:80]
    assert is_subsequence(body.sequence, text)
    for number, (header, rows) in enumerate(body.tables):
        check_table_pages(header, [r[0] for r in rows], pages)
        check_table_rows(header, rows, text, table_end(number))
    assert read.overflowing == []


def check_table_pages(header: list[str], markers: list[str], pages: list[str]) -> None:
    """Every row once, in order; on every page with rows the header row comes first."""
    text = "".join(pages)
    positions = [text.find(m) for m in markers]
    assert -1 not in positions and positions == sorted(positions)
    assert all(text.count(m) == 1 for m in markers)
    heading = "".join(squeeze(h) for h in header)
    for page in pages:
        first = min((page.find(m) for m in markers if m in page), default=-1)
        if first >= 0:
            assert heading in page[:first], page[:200]
        assert page.count(heading) <= 1  # never again below rows of the same page


def check_table_rows(header: list[str], rows: list[list[str]], text: str, end: str) -> None:
    """Each row prints exactly its cells' characters (a row split across pages has its cells
    interleaved, and the header row repeated between the parts)."""
    heading = "".join(squeeze(h) for h in header)
    bounds = [text.find(r[0]) for r in rows] + [text.find(end)]
    for row, start, stop in zip(rows, bounds, bounds[1:]):
        printed = text[start:stop].replace(heading, "")
        assert Counter(printed) == Counter("".join(squeeze(c) for c in row)), row[0]


# ---------------------------------------------------------------- paragraphs

@pytest.mark.parametrize("length", [5_000, 50_000])
def test_paragraph_taller_than_a_page_splits_and_keeps_every_word(signer, length):
    body = Body()
    body.open("Decorso clinico")
    body.close(body.paragraph(words(random.Random(length), length)))
    cda = cda_with_body(body.xml, "LDO")
    read = packaged_pages(cda, signer)
    pages = read.body
    assert len(pages) >= (2 if length == 5_000 else 8)
    check_everything_printed(body, read)


def test_unbroken_token_longer_than_a_page_breaks_anywhere(signer):
    body = Body()
    body.open("Immagini")
    body.close(body.paragraph(token(random.Random(1), 20_000)))
    cda = cda_with_body(body.xml)
    read = packaged_pages(cda, signer)
    pages = read.body
    assert len(pages) >= 2
    check_everything_printed(body, read)


def test_official_samples_with_their_narratives_multiplied(signer):
    """The LDO letter with every paragraph of its narrative twenty times over."""
    text = sample("LDO").decode("utf-8")
    longer = re.sub(r"(<paragraph>.*?</paragraph>)", lambda m: m.group(1) * 20, text, flags=re.S)
    assert longer != text
    pdf = package.package_pdf(longer.encode(), signer)
    assert len(page_texts(pdf)) > len(page_texts(package.package_pdf(sample("LDO"), signer))) + 3


# ---------------------------------------------------------------- tables

def test_table_of_300_rows_repeats_its_header_and_starts_on_page_1(signer):
    """Short rows move whole to the next page, rows with long comments split where it ends;
    either way the header row starts every page, and only there."""
    rng = random.Random(300)
    body = Body()
    body.open("Esami ematochimici")
    header = ["Esame#", "Risultato#", "Unità#", "Intervallo#"]
    rows = [[f"#R{r:04d}#", words(rng, rng.choice([6, 6, 6, 6, 300, 1200])), "mg/dL", "10 - 20"]
            for r in range(300)]
    body.close(body.table(header, rows))
    cda = cda_with_body(body.xml, "LAB")
    read = packaged_pages(cda, signer)
    pages = read.body
    assert len(pages) >= 5
    # the report header does not sit alone on page 1: the table starts under it
    assert "#R0000#" in pages[0] and "Esamiematochimici" in pages[0]
    check_everything_printed(body, read)
    assert all("Esame#Risultato#Unità#Intervallo#" in page for page in pages)


def test_title_moves_with_its_table_when_no_row_fits_under_it():
    """A title never ends a page alone: with no room for a row under it, it starts the next one.

    Page 1 is filled by a paragraph up to every height around the point where
    the title stops fitting: coarse steps until it moves, then line by line.
    """

    def title_page(filler: int) -> int:
        body = Body()
        body.open("Anamnesi")
        body.close(body.paragraph(words(random.Random(0), filler)))
        body.open("Risultati")
        body.close(body.table(["Esame#", "Valore#"], [[f"#R{r}#", "1"] for r in range(40)]))
        cda = cda_with_body(body.xml)
        pages = read_pages(package.build_unsigned_pdf(cda), cda, None).body
        page = next(n for n, p in enumerate(pages) if "Risultati" in p)
        assert "#R0#" in pages[page], filler
        return page

    coarse = next(f for f in range(500, 20_000, 400) if title_page(f) == 1)
    seen = {title_page(f) for f in range(coarse - 400, coarse, 25)}
    assert seen == {0, 1}  # both cases met, the title with its first row in each


def test_long_url_wraps_inside_its_cell_and_the_other_columns_keep_their_words(signer):
    url = token(random.Random(400), 400)
    cda = re.sub(r"(<td>20</td>\s*)<td></td>", lambda m: m.group(1) + f"<td>{url}</td>",
                 sample("LAB").decode("utf-8"), count=1).encode()
    assert url.encode() in cda
    pdf = package.package_pdf(cda, signer)
    read = read_pages(pdf, cda, signer.display_name)
    assert is_subsequence([url], "".join(read.body))  # (were the row to continue overleaf)
    for word in ("Microalbumina", "Urine", "mg/L", "0 - 20"):  # not cut to a letter per line
        assert word in {line.strip() for line in page_texts(pdf)[0].splitlines()}, word
    assert read.overflowing == []


def test_tokens_break_inside_their_own_cell(signer):
    """A token wider than its column breaks anywhere, and no line of it reaches the next column."""
    rng = random.Random(41)
    body = Body()
    body.open("Immagini")
    rows = [[f"#R{r}#", token(rng, 400), words(rng, 30)] for r in range(6)]
    body.close(body.table(["Esame#", "Collegamento#", "Nota#"], rows))
    cda = cda_with_body(body.xml)
    read = packaged_pages(cda, signer)
    check_everything_printed(body, read)
    starts = sorted({round(x) for _, x, _, t in read.lines if t.startswith("https://")})
    assert len(starts) == 1  # every URL starts in the one column
    column = starts[0]
    notes = min(x for _, x, _, t in read.lines if round(x) > column and any(t in r[2] for r in rows))
    inside = [end for _, x, end, _ in read.lines if round(x) == column]
    assert len(inside) > 6 and max(inside) <= notes - 6  # the cell's right padding at least


def test_captioned_table_inside_a_cell_is_printed(signer):
    inner = ("<table><caption>Dettaglio interno</caption><tr><th>A#</th><th>B#</th></tr>"
             "<tr><td>uno</td><td>due</td></tr></table>")
    cda = cda_with_body([f"<component><section><title>Tabelle</title><text><table><tr><th>X#</th><th>Y#</th>"
                         f"</tr><tr><td>cella</td><td>{inner}</td></tr></table></text></section></component>"])
    read = packaged_pages(cda, signer)
    assert "Tabelle" + "X#Y#cellaDettagliointernoA#B#unodue" in read.body[0]


@given(texts=st.lists(st.lists(st.one_of(st.integers(0, 40).map(lambda n: "w" * n),
                                          st.integers(41, 600).map(lambda n: "u" * n),
                                          st.integers(1, 12).map(lambda n: " ".join(["parola"] * n))),
                                min_size=1, max_size=20), min_size=1, max_size=12),
       width=st.floats(100, Layout().frame_width))
@settings(max_examples=200, deadline=None)
def test_column_widths_fill_the_width_and_starve_no_column(texts, width):
    layout = Layout()
    register_fonts(layout)
    renderer = NarrativeRenderer(layout, make_styles(layout))
    columns = {c: [(t, n == 0) for n, t in enumerate(cells)] for c, cells in enumerate(texts)}
    widths = renderer._column_widths(columns, len(texts), width)
    assert math.isclose(sum(widths), width, rel_tol=1e-9)
    floor = min(width / len(texts), 3 * layout.table_size + 7)
    assert min(widths) >= floor - 1e-6
    # a column of short words only is never narrower than a column that holds a long token
    tokens = [c for c, cells in enumerate(texts) if any(len(w) > 40 for t in cells for w in t.split())]
    plain = [c for c in columns if c not in tokens]
    if tokens and plain:
        assert min(widths[c] for c in plain) >= min(floor, min(widths[c] for c in tokens)) - 1e-6


# ---------------------------------------------------------------- any shape

@st.composite
def bodies(draw, budget: int = 100_000) -> Body:
    """One to five sections of paragraphs (1 character to 60 KB, words or one unbroken token),
    lists (nested, ordered or not) and tables (1 to 300 rows, 1 to 8 columns, tokens in cells);
    about *budget* characters at most, to keep an example within seconds."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    body = Body()
    left = budget

    def size(drawn: int) -> int:
        nonlocal left
        taken = max(1, min(drawn, left))
        left -= taken
        return taken

    for s in range(draw(st.integers(1, 5))):
        body.open(f"Sezione {s} " + words(rng, draw(st.integers(1, 60))))
        blocks = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["paragraph", "token", "list", "table"]))
            if kind == "paragraph":
                blocks.append(body.paragraph(words(rng, size(draw(st.integers(1, 60_000))),
                                                   longest=draw(st.integers(1, 40)))))
            elif kind == "token":
                blocks.append(body.paragraph(token(rng, size(draw(st.integers(1, 3_000))))))
            elif kind == "list":
                items = [words(rng, size(rng.randint(1, 400))) for _ in range(draw(st.integers(1, 30)))]
                nested = [words(rng, size(rng.randint(1, 80))) for _ in range(draw(st.integers(0, 5)))]
                blocks.append(body.items(items, draw(st.booleans()), nested))
            else:
                ncols, nrows = draw(st.integers(1, 8)), draw(st.integers(1, 300))
                long_cells = draw(st.floats(0, 0.2))
                t = len(body.tables)
                header = [f"Col{c}#{t}" for c in range(ncols)]
                rows = [[f"#T{t}R{r}#"] + [token(rng, size(rng.randint(41, 400))) if rng.random() < long_cells
                                           else words(rng, size(rng.randint(1, 60))) for _ in range(ncols - 1)]
                        for r in range(nrows)]
                blocks.append(body.table(header, rows))
        body.close(*blocks)
    return body


@given(body=bodies(budget=60_000))
@CI
def test_any_report_packages_with_every_word_on_its_pages(signer, body):
    cda = cda_with_body(body.xml)
    read = packaged_pages(cda, signer)
    pages = read.body
    # a page holds at most ~20,000 of the narrowest characters at the table size
    chars = sum(len(t) for t in body.sequence)
    assert len(pages) >= math.ceil(chars / 20_000)
    check_everything_printed(body, read)


@given(body=bodies(budget=20_000), more=bodies(budget=20_000))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
def test_more_content_never_means_fewer_pages(body, more):
    shorter = len(page_texts(package.render(cda_with_body(body.xml))))
    longer = len(page_texts(package.render(cda_with_body(body.xml + more.xml))))
    assert longer >= shorter
