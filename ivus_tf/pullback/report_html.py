"""report.html: the pullback report as one self-contained page (figures embedded as base64 PNG, CSS inline, no
script and no external fetch), readable on screen and printed on A4 (a print stylesheet keeps tables and figures
whole and each pullback on its own pages). Every number shown is in report.json; the page says where the
pullback geometry and pixel spacing came from and what could not be assessed.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping

from ivus_tf.core.vocab import TASKS
from ivus_tf.overlay import COLOURS_HEX
from ivus_tf.pullback.calcium_score import ITEM_TITLES, NOT_ASSESSED

CSS = """
:root { --ink: #1d2733; --muted: #5b6775; --line: #d5dbe3; --accent: #0b5cad; --risk: #b71c1c; --ok: #2e7d32;
        --warn: #e65100; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: var(--ink); margin: 0 auto;
       max-width: 1180px; padding: 18px 26px; font-size: 14px; line-height: 1.4; background: #fff; }
h1 { font-size: 22px; margin: 0 0 2px; } h2 { font-size: 18px; margin: 26px 0 8px; border-bottom: 2px solid
var(--accent); padding-bottom: 3px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: var(--muted); margin: 0 0 10px; }
.notice { border-left: 4px solid var(--warn); background: #fff3e0; padding: 6px 10px; margin: 10px 0; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 12.5px; }
th, td { border: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #eef2f7; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th { width: 210px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; min-width: 150px; }
.card .value { font-size: 19px; font-weight: 700; } .card .label { color: var(--muted); font-size: 11.5px; }
.risk-high { color: var(--risk); font-weight: 700; } .risk-low { color: var(--ok); font-weight: 700; }
.risk-cannot { color: var(--warn); font-weight: 700; }
.status-met { color: var(--risk); font-weight: 600; } .status-not { color: var(--ok); }
.status-na { color: var(--warn); font-style: italic; }
figure { margin: 10px 0 16px; } figure img { width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; margin-top: 3px; }
.legend span { display: inline-block; margin-right: 12px; } .sw { display: inline-block; width: 12px; height: 12px;
  vertical-align: -1px; margin-right: 4px; border: 1px solid #888; }
footer { color: var(--muted); font-size: 11.5px; margin-top: 28px; border-top: 1px solid var(--line);
  padding-top: 6px; }
@page { size: A4; margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2 { break-after: avoid; } h3 { break-after: avoid; }
  section.pullback + section.pullback { break-before: page; }
  table, figure, .cards, .lesion { break-inside: avoid; }
  figure img { max-height: 235mm; object-fit: contain; }
}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def _at(entry: Mapping | None) -> str:
    """' (frame <id>, <position> mm)' of an extreme value; '' when there is none."""
    if not entry or entry.get("frame") is None:
        return ""
    where = f"frame {_e(entry['frame_id'])}"
    if entry.get("position_mm") is not None:
        where += f", {entry['position_mm']:.1f} mm"
    return f" <small>({where})</small>"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _risk(score: Mapping) -> str:
    risk = score["underexpansion_risk"]
    css = {"high": "risk-high", "low": "risk-low"}.get(risk, "risk-cannot")
    return f'<span class="{css}">{_e(risk)}</span>'


def _meta(report: Mapping) -> str:
    settings = report["settings"]
    rows = [("Input", f"{_e(report.get('input', ''))} ({_e(report.get('input_kind', ''))})"),
            ("Model", f"{_e(report.get('model', ''))} &middot; engine {_e(report.get('engine', ''))} &middot; "
                      f"tasks {_e(', '.join(report.get('tasks', [])))}"),
            ("Pixel spacing source", _e(report.get("pixel_spacing_source", ""))),
            ("Lesion definition", f"calcium area &gt; {settings['calcium_min_area_mm2']:g} mm&sup2;, gaps &le; "
                                  f"{settings['lesion_gap_mm']:g} mm bridged, length &ge; "
                                  f"{settings['lesion_min_length_mm']:g} mm"),
            ("Superficial calcium", f"leading edge within {settings['superficial_depth_mm']:g} mm of the lumen "
                                    "border"),
            ("Report", f"ivus-tf {_e(report['package_version'])}, created {_e(report['created_utc'])}")]
    return "<table class='meta'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _geometry(geometry: Mapping, spacing) -> str:
    rows = [("Pullback speed", f"{_num(geometry['pullback_speed_mm_s'], 3, ' mm/s')} "
                               f"<small>({_e(geometry['pullback_speed_source'])})</small>"),
            ("Frame rate", f"{_num(geometry['frame_rate_hz'], 2, ' Hz')} "
                           f"<small>({_e(geometry['frame_rate_source'])})</small>"),
            ("Frame interval", _num(geometry["frame_interval_mm"], 4, " mm")),
            ("Positions", _e(geometry["position_source"])),
            ("Pixel spacing", ", ".join(f"{s:g}" for s in spacing) + " mm")]
    return "<table class='meta geometry'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + \
        "</table>"


def _lesion_table(lesions, tasks) -> str:
    if "calcium" not in tasks:
        return "<p class='no-lesions'>This model has no calcium output: no lesions can be found.</p>"
    if not lesions:
        return "<p class='no-lesions'>No calcified lesion found in this pullback.</p>"
    head = ("Lesion", "Start&ndash;end (mm)", "Length (mm)", "Max arc (&deg;)", "Mean arc (&deg;)",
            "Max superficial arc (&deg;)", "Max Ca area (mm&sup2;)", "Min lumen area (mm&sup2;)", "Max PB (%)",
            "Vessel &Oslash; at max arc (mm)", "Calcium score", "Underexpansion risk")
    body = []
    for lesion in lesions:
        score = lesion["calcium_score"]

        def at(name, lesion=lesion):
            return _at({key: lesion[f"{name}_{key}"] for key in ("frame", "frame_id", "position_mm")})

        body.append(
            f"<tr class='lesion-row' data-lesion='{lesion['lesion']}'><td>L{lesion['lesion']}</td>"
            f"<td class='num'>{lesion['start_mm']:.1f}&ndash;{lesion['end_mm']:.1f}<br><small>frames "
            f"{_e(lesion['first_frame_id'])}&ndash;{_e(lesion['last_frame_id'])}</small></td>"
            f"<td class='num length'>{lesion['length_mm']:.1f}</td>"
            f"<td class='num'>{_num(lesion['max_calcium_arc_deg'], 0)}{at('max_calcium_arc')}</td>"
            f"<td class='num'>{_num(lesion['mean_calcium_arc_deg'], 0)}</td>"
            f"<td class='num'>{_num(lesion['max_superficial_calcium_arc_deg'], 0)}</td>"
            f"<td class='num'>{_num(lesion['max_calcium_area_mm2'], 2)}</td>"
            f"<td class='num'>{_num(lesion['min_lumen_area_mm2'], 2)}{at('min_lumen_area')}</td>"
            f"<td class='num'>{_num(lesion['max_plaque_burden_percent'], 0)}</td>"
            f"<td class='num'>{_num(lesion['vessel_diameter_at_max_arc_mm'], 2)}</td>"
            f"<td class='score'>{_e(score['score_text'])}</td><td>{_risk(score)}</td></tr>")
    return ("<table class='lesions'><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(body)
            + "</table>")


def _score_details(lesion) -> str:
    score = lesion["calcium_score"]
    rows = []
    for name, item in score["items"].items():
        status = item["status"]
        css = {"met": "status-met", NOT_ASSESSED: "status-na"}.get(status, "status-not")
        digits = 2 if item["unit"] == "mm" else 0  # 3.46 vs 3.5 mm matters; degrees are whole
        value = "" if item["value"] is None else f"{item['value']:.{digits}f} {_e(item['unit'])}"
        note = f" <small>{_e(item['note'])}</small>" if item["note"] else ""
        rows.append(f"<tr data-item='{_e(name)}'><td>{_e(ITEM_TITLES[name])}</td><td class='{css}'>{_e(status)}"
                    f"</td><td class='num'>{'' if item['points'] is None else item['points']}</td>"
                    f"<td class='num'>{value}</td><td>{_e(item['rule'])}{note}</td></tr>")
    return (f"<div class='lesion' id='lesion-{lesion['lesion']}'><h3>Lesion L{lesion['lesion']}: IVUS calcium score "
            f"{_e(score['score_text'])} &middot; underexpansion risk {_risk(score)}</h3>"
            "<table class='score-items'><tr><th>Item</th><th>Status</th><th>Point</th><th>Measured</th>"
            "<th>Rule</th></tr>" + "".join(rows) + "</table></div>")


LEGEND = (f"<p class='legend'><span><i class='sw' style='background:{COLOURS_HEX['calcium']}'></i>calcium</span>"
          f"<span><i class='sw' style='background:{COLOURS_HEX['superficial']}'></i>superficial calcium / lesion"
          "</span>"
          f"<span><i class='sw' style='background:{COLOURS_HEX['lumen']}'></i>lumen</span>"
          f"<span><i class='sw' style='background:{COLOURS_HEX['vessel']}'></i>vessel (EEM)</span></p>")
CAPTIONS = {
    "profiles": "Along the pullback: calcium arc and superficial calcium arc (dashed: 270&deg; and 360&deg;), lumen "
                "and vessel (EEM) areas, and diameters (dashed: 3.5 mm); lesions shaded.",
    "lmode": "L-mode: longitudinal cuts through the catheter; lesions marked on top. Cardiac motion (non-gated "
             "pullback) shows as a saw-tooth in the borders.",
    "frames": "Worst frames: contours of calcium (red; superficial part filled orange), lumen (yellow) and vessel "
              "(cyan); dashed: the L-mode cut through the most calcium; bar: 1 mm.",
}


def _pullback(entry: Mapping, figures: Mapping[str, bytes], tasks) -> str:
    summary, geometry = entry["summary"], entry["geometry"]
    cards = [(f"{geometry['pullback_length_mm']:.1f} mm", f"pullback, {summary['frames']} frames"),
             (str(summary["lesions"]), "calcified lesions"),
             (str(summary["lesions_at_risk"]), "lesions with calcium score &ge; 2"),
             (_num(summary["max_calcium_arc_deg"]["value"], 0, "&deg;"),
              "maximum calcium arc" + _at(summary["max_calcium_arc_deg"])),
             (_num(summary["min_lumen_area_mm2"]["value"], 2, " mm&sup2;"),
              "minimum lumen area" + _at(summary["min_lumen_area_mm2"])),
             (_num(summary["calcium_length_mm"], 1, " mm"), "calcified length")]
    parts = [f"<section class='pullback' data-case='{_e(entry['case_id'])}'>",
             f"<h2>Pullback {_e(entry['case_id'])}</h2>",
             "<div class='cards'>" + "".join(f"<div class='card'><div class='value'>{v}</div><div class='label'>"
                                             f"{label}</div></div>" for v, label in cards) + "</div>",
             _geometry(geometry, entry["pixel_spacing_mm"]), "<h3>Lesions</h3>",
             _lesion_table(entry["lesions"], tasks)]
    parts += [_score_details(lesion) for lesion in entry["lesions"]]
    parts.append(LEGEND)
    for name in ("profiles", "lmode", "frames"):
        if name in figures:
            parts.append(f"<figure class='figure-{name}'>{_img(figures[name], name)}<figcaption>{CAPTIONS[name]}"
                         "</figcaption></figure>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: Mapping, figures: Mapping[str, Mapping[str, bytes]]) -> str:
    """The page for `report` (the report.json dict) with `figures[case_id][name]` PNG bytes."""
    warnings = "".join(f"<li>{_e(w)}</li>" for w in report.get("warnings", []))
    definitions = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in report["definitions"].items())
    body = [f"<h1>IVUS pullback calcium report</h1><p class='sub'>{_e(report.get('input', ''))}</p>",
            "<div class='notice'>Research software: automated segmentation by a neural network, not a validated "
            "medical device. Check the frames before acting on any number. The calcified-nodule item of the "
            "calcium score is not assessed.</div>",
            _meta(report)]
    if warnings:
        body.append(f"<div class='notice'><b>Warnings</b><ul>{warnings}</ul></div>")
    tasks = report.get("tasks", TASKS)
    body += [_pullback(entry, figures.get(entry["case_id"], {}), tasks) for entry in report["pullbacks"]]
    body.append(f"<h2>Definitions</h2><dl class='definitions'>{definitions}</dl>")
    body.append(f"<footer>ivus-tf {_e(report['package_version'])} &middot; report schema "
                f"{report['schema_version']} &middot; all numbers are in report.json; per-frame values in "
                "measurements.csv</footer>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>IVUS calcium report &ndash; {_e(report.get('input_name', 'pullback'))}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
