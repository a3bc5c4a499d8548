"""``flame report``: the study as one self-contained HTML page, ``<sweep_dir>/report.html``."""

from analysis.report.html import (
    REPORT_HTML,
    render_report,
    report_arguments,
    report_command,
    write_report,
)

__all__ = ["write_report", "render_report", "report_command", "report_arguments",
           "REPORT_HTML"]
