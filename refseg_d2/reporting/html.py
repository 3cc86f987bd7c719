"""
Building blocks of a self-contained HTML page: escaped tables, bars, images embedded as base64
PNG data URIs and the page itself (inline CSS, no script, nothing fetched).
"""
import base64
import html
import io
import math

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em;
  border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.bar { background: #4a7ebb; height: 0.8em; display: inline-block; }
.note { color: #666; font-size: 0.85em; }
.failed { color: #b00; }
.cols { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.85em; color: #444; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def esc(value):
    """``value`` as escaped HTML text."""
    return html.escape(str(value), quote=True)


def number(value, digits=1):
    """A number formatted for a table cell ("-" for None, "nan" for NaN)."""
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "nan"
    return "{:.{}f}".format(value, digits)


def table(header, rows, numeric=()):
    """
    An HTML table.

    Args:
        header (list[str] or None): column titles (escaped); None: no header row.
        rows (list[list]): cells; a cell given as ``Raw(html)`` is inserted as it is, any other
            value escaped.
        numeric (iterable[int]): columns right-aligned.
    """
    numeric = set(numeric)
    head = "<tr>{}</tr>".format("".join("<th>{}</th>".format(esc(t)) for t in header)) \
        if header else ""
    body = []
    for row in rows:
        cells = "".join(
            '<td{}>{}</td>'.format(' class="num"' if j in numeric else "",
                                   c.html if isinstance(c, Raw) else esc(c))
            for j, c in enumerate(row))
        body.append("<tr>{}</tr>".format(cells))
    return "<table>{}{}</table>".format(head, "".join(body))


class Raw:
    """HTML inserted without escaping (built by this module's helpers)."""

    def __init__(self, text):
        self.html = text


def bar(fraction, width_px=160):
    """A horizontal bar of ``fraction`` (0..1) of ``width_px`` pixels."""
    if fraction is None or math.isnan(fraction):
        return Raw("")
    px = int(round(max(0.0, min(1.0, fraction)) * width_px))
    return Raw('<span class="bar" style="width:{}px"></span>'.format(px))


def png_data_uri(image):
    """A PIL image as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure(image, caption, alt):
    """An embedded image with its caption."""
    return ('<figure><img src="{}" alt="{}" width="{}" height="{}">'
            "<figcaption>{}</figcaption></figure>").format(
                png_data_uri(image), esc(alt), image.width, image.height, esc(caption))


def section(title, body, anchor):
    return '<section id="{}"><h2>{}</h2>{}</section>'.format(esc(anchor), esc(title), body)


def paragraph(text, cls=None):
    return "<p{}>{}</p>".format(' class="{}"'.format(cls) if cls else "", esc(text))


def page(title, sections):
    """The whole document."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            "<title>{}</title><style>{}</style></head><body><h1>{}</h1>{}</body></html>\n").format(
                esc(title), STYLE, esc(title), "".join(sections))
