"""Render a Report to CDA2 XML with the type's Jinja2 template (cda.md; issue 3 part 3).

The templates (templates/<type>.xml.j2 plus _macros.xml.j2) hold every piece
of CDA structure; this module only builds the environment (autoescape always
on, StrictUndefined, the filters below) and calls the template the report's
mapping names. Output: UTF-8 with an XML declaration, HL7 elements without
namespace prefixes (gateway.md §6: the first <id> and <code> are the
document's).
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
from lxml import etree
from markupsafe import Markup, escape

from bridge.errors import ConfigError
from bridge.gateway.identifiers import DocumentIds
from bridge.hl7.path import HIGHLIGHT, NORMAL
from bridge.mapping.text import plain
from bridge.model import Report

_XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")


def text_lines(text: str) -> list[str]:
    """Lines of a text value; CR, LF and CRLF all break lines."""
    return re.split(r"\r\n|\r|\n", text.strip("\r\n")) if text else []


def xml_id(value: str) -> str:
    """A value usable as an XML ID (narrative anchors)."""
    cleaned = _SAFE_ID.sub("_", value)
    return cleaned if cleaned[:1].isalpha() else f"id_{cleaned}"


def keep_lines(text: str) -> Markup:
    """Text escaped for XML with line breaks as ``&#10;``, so indentation cannot alter it."""
    return Markup(str(escape(text)).replace("\r\n", "\n").replace("\r", "\n").replace("\n", "&#10;"))


def styled(text: str) -> Markup:
    """Narrative text: escaped, lines as ``<br/>``, highlighted runs as ``<content styleCode="Bold">``.

    Each call balances its own runs, so a paragraph is well-formed whatever its marks.
    """
    out, bold = [], False
    for piece in re.split(f"([{HIGHLIGHT}{NORMAL}])", text.strip("\r\n")):
        if piece in (HIGHLIGHT, NORMAL):
            if (piece == HIGHLIGHT) != bold:
                out.append('<content styleCode="Bold">' if not bold else "</content>")
                bold = not bold
        elif piece:
            out.append("<br/>".join(str(escape(line)) for line in re.split(r"\r\n|\r|\n", piece)))
    if bold:
        out.append("</content>")
    return Markup("".join(out))


def make_environment(templates_dir: str | Path) -> jinja2.Environment:
    """The Jinja2 environment for CDA templates (autoescape on for everything)."""
    directory = Path(templates_dir)
    if not directory.is_dir():
        raise ConfigError("templates folder not found", file=str(directory), key="mapping.templates")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["lines"] = text_lines
    env.filters["xml_id"] = xml_id
    env.filters["keep_lines"] = keep_lines
    env.filters["styled"] = styled
    env.filters["plain"] = plain
    return env


def render_cda(report: Report, env: jinja2.Environment, ids: DocumentIds) -> bytes:
    """The CDA of *report* identified by *ids*, as UTF-8 bytes with the XML declaration."""
    try:
        template = env.get_template(report.template)
    except jinja2.TemplateNotFound:
        raise ConfigError("template not found", file=report.template, key="mapping.templates") from None
    effective = ids.effective_time or report.effective_time
    text = template.render(report=report, ids=ids, effective_time=effective)
    # Blank lines left by template control blocks go; text values never hold a raw
    # line break (keep_lines writes &#10;, narrative uses <br/>), so none is lost.
    body = "\n".join(line for line in text.splitlines() if line.strip()).encode("utf-8")
    # A template bug must surface here, not as a gateway syntax error.
    try:
        etree.fromstring(body)
    except etree.XMLSyntaxError as exc:
        raise ConfigError(f"template produced malformed XML: {exc}", file=report.template) from None
    return _XML_DECL + body
