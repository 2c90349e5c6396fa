"""What a campaign has found so far, for people: the HTML report (``oedal report``) and the one-screen
status table (``oedal status``).

Everything here reads a campaign's results folder (``{results_dir}/{campaign}/``) as it is at that
moment, whatever iterations exist; nothing is written there but the report itself. The numbers come
from the same functions as the workflow's summary (``oedal.campaign.summary.summary_rows``) and
comparison (``oedal.campaign.statistics``), so the page and the CSV files cannot disagree.
"""

from oedal.report.collect import CampaignResults
from oedal.report.page import write_report
from oedal.report.runs import Run, find_runs
from oedal.report.status import status_rows, status_table

__all__ = ["CampaignResults", "Run", "find_runs", "status_rows", "status_table", "write_report"]
