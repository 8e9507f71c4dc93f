"""Human-readable run reports."""

from vlp.report.html import RetrievalExample, write_report

__all__ = ["RetrievalExample", "write_report"]
