"""Reports of evaluations: tables (CSV, JSON, Markdown, text), operating-characteristic plots (Figs. 5-7),
worst-case panels (Figs. 2-3) and one self-contained HTML file."""

from smoothadv.report.html import Section, html_table, png_data_uri, render_html, write_html
from smoothadv.report.panels import worst_case_panel, worst_cases
from smoothadv.report.plots import plot_operating_characteristics
from smoothadv.report.report import PANEL_FILE, PLOT_FILE, REPORT_FILE, write_report
from smoothadv.report.tables import table_csv, table_markdown, table_text, write_records_csv, write_tables

__all__ = [
    "PANEL_FILE",
    "PLOT_FILE",
    "REPORT_FILE",
    "Section",
    "html_table",
    "plot_operating_characteristics",
    "png_data_uri",
    "render_html",
    "table_csv",
    "table_markdown",
    "table_text",
    "write_records_csv",
    "write_tables",
    "worst_case_panel",
    "worst_cases",
    "write_html",
    "write_report",
]
