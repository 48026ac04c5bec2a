"""The CDA2 document: rendering (Jinja2), validation (XSD + schematron), rules install."""
