"""``oedal report|status|record``: what a campaign has found so far (oedal.report)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("oedal.cli.report")


def _report(args: argparse.Namespace) -> int:
    from oedal.report import write_report

    out = write_report(args.campaign_dir, args.out, inspect=not args.no_models, figures_dir=args.figures)
    print(f"report: {out}")
    return 0


def campaign_folder(args: argparse.Namespace) -> Path:
    """RESULTS_DIR/CAMPAIGN: given, or from a campaign config (its results_dir and name)."""
    if args.config is None:
        if args.campaign_dir is None:
            raise ValueError("give RESULTS_DIR/CAMPAIGN or --config FILE")
        return args.campaign_dir
    import yaml

    from oedal.campaign.plan import validate_campaign

    campaign = validate_campaign(yaml.safe_load(Path(args.config).read_text()) or {}, str(args.config))
    return Path(campaign.results_dir) / campaign.name


def _status(args: argparse.Namespace) -> int:
    from oedal.campaign.tree import REPORT, VERDICT
    from oedal.report import CampaignResults, status_table

    folder = campaign_folder(args)
    print(status_table(CampaignResults.read(folder)))
    if args.verdict:
        verdict, report = folder / VERDICT, folder / REPORT
        print("\nverdict:\n" + (verdict.read_text().rstrip() if verdict.is_file() else "  (no verdict.txt yet)"))
        print(f"\nreport: {report.resolve() if report.is_file() else 'not made yet (oedal report ' + str(folder) + ')'}")
    return 0


def _record(args: argparse.Namespace) -> int:
    from oedal.campaign.records import record_campaign
    from oedal.settings import settings_data

    record = record_campaign(settings_data(args.campaign), args.out)
    log.info("campaign %s: %d selection rounds planned -> %s", record["campaign"]["name"], len(record["batches"]),
             args.out)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="the campaign's HTML report (verdict, learning curves, scores, cost, "
                              "provenance) from whatever iterations exist")
    p.add_argument("campaign_dir", metavar="RESULTS_DIR/CAMPAIGN", type=Path, help="the campaign's results folder")
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default RESULTS_DIR/CAMPAIGN/report.html)")
    p.add_argument("--figures", type=Path, default=None, help="also write the figures as PNG files into this folder")
    p.add_argument("--no-models", action="store_true",
                   help="do not evaluate or score with the models (no parity plot, no score–error correlation)")
    p.set_defaults(func=_report)

    p = subparsers.add_parser("status", help="one line per strategy and seed: iteration, N_train, labels spent and "
                              "failed, last test force MAE, in progress or stopped (and why)")
    p.add_argument("campaign_dir", metavar="RESULTS_DIR/CAMPAIGN", type=Path, nargs="?", default=None,
                   help="the campaign's results folder")
    p.add_argument("--config", type=Path, default=None,
                   help="a campaign config (YAML): its results_dir/name instead of RESULTS_DIR/CAMPAIGN")
    p.add_argument("--verdict", action="store_true", help="then print verdict.txt and where the report is")
    p.set_defaults(func=_status)

    p = subparsers.add_parser("record", help="write the resolved campaign settings and plan (campaign.json)")
    p.add_argument("--campaign", required=True, help="the campaign config as JSON (string or file)")
    p.add_argument("--out", required=True, type=Path, help="campaign.json to write")
    p.set_defaults(func=_record)
