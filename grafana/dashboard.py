"""The smsp-exporter Grafana dashboard, as code (Grafana's grafana-foundation-sdk).

    python grafana/dashboard.py            print the dashboard JSON
    python grafana/dashboard.py --write    write it to grafana/dashboards/smsp-exporter.json
    python grafana/dashboard.py --check    exit 1 if the committed JSON differs from this code

The committed JSON is what users import (Grafana UI: Dashboards > New > Import) or provision
(grafana/provisioning/). Every panel and query uses the `$datasource` variable, so the file
works both ways without `__inputs`. The shares come from the recording rules in
deploy/prometheus/rules/smsp-exporter.rules.yml, which Prometheus must load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as d
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prom_model

UID = "smsp-exporter"
TITLE = "SMS Partner campaigns (smsp-exporter)"
PATH = Path(__file__).resolve().parent / "dashboards" / "smsp-exporter.json"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every per-tag query filters on the three variables.
SEL = 'job=~"$job", instance=~"$instance", tag=~"$tag"'
# The account's series have no tag.
ACCOUNT_SEL = 'job=~"$job", instance=~"$instance"'
# The job and instance variables list the targets serving either series: an exporter's own
# /metrics (build info, even without tags) and /probe targets (sms_up only).
TARGETS = '__name__=~"sms_up|sms_exporter_build_info"'
# The thresholds of the alerts (deploy/prometheus/rules/smsp-exporter.alerts.yml): Not
# delivered shares, hours of credit left, share of recent messages still Waiting.
WARNING_SHARE, CRITICAL_SHARE = 0.10, 0.25
CREDIT_HOURS_LOW = 24
STUCK_SHARE = 0.20


def per_tag(expr: str, by: str = "tag") -> str:
    """One series per tag even when two targets scrape the same tag (a /metrics job and a
    /probe job, two Prometheus jobs): they read the same counts, so take one, not the sum."""
    return f"max by ({by}) ({expr})"


# Hours of credit left shown when credit is not being spent (or would last longer than this).
CREDIT_HOURS_CAP = 365 * 24


def query(
    expr: str, legend: str = "__auto", *, instant: bool = False, ref: str = "A"
) -> prom.Dataquery:
    q = prom.Dataquery().ref_id(ref).expr(expr).legend_format(legend).datasource(DATASOURCE)
    return q.instant() if instant else q.range()


def thresholds(*steps: tuple[float | None, str]) -> d.ThresholdsConfig:
    return (
        d.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def value_map(mapping: dict[str, tuple[str, str]]) -> list[model.ValueMapping]:
    return [
        model.ValueMap(
            options={
                value: model.ValueMappingResult(text=text, color=color, index=i)
                for i, (value, (text, color)) in enumerate(mapping.items())
            }
        )
    ]


NOT_DELIVERED_THRESHOLDS = ((None, "green"), (WARNING_SHARE, "orange"), (CRITICAL_SHARE, "red"))


def titled(panel, panel_id: int, title: str, description: str, target: prom.Dataquery):
    """The settings every panel shares: id, title, help text, data source, query."""
    return (
        panel.id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(target)
    )


def last_value():
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"])


def share_gauge(panel_id: int, title: str, expr: str, description: str, steps) -> bargauge.Panel:
    return (
        titled(bargauge.Panel(), panel_id, title, description, query(expr, "{{tag}}", instant=True))
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(thresholds(*steps))
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(last_value())
        .span(8)
        .height(8)
    )


def tag_stat(
    panel_id: int, title: str, expr: str, description: str, color: common.BigValueColorMode
) -> stat.Panel:
    """One big value per tag, its name beside it."""
    return (
        titled(stat.Panel(), panel_id, title, description, query(expr, "{{tag}}", instant=True))
        .color_mode(color)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(last_value())
    )


def per_tag_stat(panel_id: int, title: str, expr: str, description: str) -> stat.Panel:
    return (
        tag_stat(panel_id, title, expr, description, common.BigValueColorMode.NONE)
        .unit("short")
        .decimals(0)
        .span(4)
        .height(8)
    )


def account_stat(panel_id: int, title: str, expr: str, legend: str, description: str) -> stat.Panel:
    """One big value per series of the account (credit kind, currency)."""
    return (
        titled(stat.Panel(), panel_id, title, description, query(expr, legend, instant=True))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(last_value())
        .span(6)
        .height(6)
    )


def dashed(panel: timeseries.Panel, *steps: tuple[float | None, str]) -> timeseries.Panel:
    """Threshold lines drawn dashed on a graph."""
    return panel.thresholds(thresholds(*steps)).thresholds_style(
        common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
    )


def state_stat(
    panel_id: int, title: str, expr: str, description: str, mapping: dict[str, tuple[str, str]]
) -> stat.Panel:
    return (
        tag_stat(panel_id, title, expr, description, common.BigValueColorMode.BACKGROUND)
        .mappings(value_map(mapping))
        .span(8)
        .height(6)
    )


def graph(
    panel_id: int,
    title: str,
    expr: str,
    legend: str,
    description: str,
    *,
    unit: str = "short",
    stacked: bool = False,
    span: int = 12,
) -> timeseries.Panel:
    panel = (
        titled(timeseries.Panel(), panel_id, title, description, query(expr, legend))
        .unit(unit)
        .fill_opacity(20 if stacked else 10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .span(span)
        .height(8)
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    return panel


def variables() -> list[Any]:
    def label_values(name: str, label: str, expr: str) -> d.QueryVariable:
        return (
            d.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(expr)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )

    return [
        d.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_values("job", "Job", f"label_values({{{TARGETS}}}, job)"),
        label_values("instance", "Instance", f'label_values({{{TARGETS}, job=~"$job"}}, instance)'),
        label_values("tag", "Tag", 'label_values(sms_up{job=~"$job", instance=~"$instance"}, tag)'),
    ]


def build() -> dict[str, Any]:
    """The dashboard as the JSON-ready dict Grafana stores."""
    board = (
        d.Dashboard(TITLE)
        .uid(UID)
        .description(
            "Are my SMS campaigns being delivered? Per-tag delivery shares and counts from "
            "smsp-exporter, and the exporter's own health. Needs the recording rules of "
            "deploy/prometheus/rules/smsp-exporter.rules.yml."
        )
        .tags(["sms", "smsp-exporter"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .variables(variables())
        .with_row(d.Row("Delivery").id(1))
        .with_panel(
            share_gauge(
                2,
                "Not delivered, last hour",
                per_tag(f"tag:sms_not_delivered:ratio1h{{{SEL}}}"),
                "Share of Not delivered among the delivery reports each tag received in the last "
                "hour: what is happening now, whatever the tag's history. Orange and red: the "
                "warning (10%, last hour) and critical (25%, last 15 minutes) alert thresholds. "
                "No bar: no report in the last hour.",
                NOT_DELIVERED_THRESHOLDS,
            )
        )
        .with_panel(
            share_gauge(
                3,
                "Delivered, last hour",
                per_tag(f"tag:sms_delivered:ratio1h{{{SEL}}}"),
                "Share of Delivered among the delivery reports each tag received in the last hour.",
                ((None, "red"), (0.75, "orange"), (0.90, "green")),
            )
        )
        .with_panel(
            share_gauge(
                25,
                "Not delivered, lifetime",
                per_tag(f"tag:sms_not_delivered:ratio{{{SEL}}}"),
                "Share of Not delivered among every message of the tag that has a report, since "
                "the tag exists: a campaign's result. On a long-lived tag it moves slowly; the "
                "alerts look at the recent shares.",
                NOT_DELIVERED_THRESHOLDS,
            )
        )
        .with_panel(
            dashed(
                graph(
                    6,
                    "Not delivered share over time",
                    per_tag(f"tag:sms_not_delivered:ratio15m{{{SEL}}}"),
                    "{{tag}} last 15 min",
                    "Share of Not delivered among the reports of the last 15 minutes (what the "
                    "critical alert watches) and of the last hour (the warning); the dashed "
                    "lines are the alert thresholds. A gap: no report in the window.",
                    unit="percentunit",
                ).with_target(
                    query(
                        per_tag(f"tag:sms_not_delivered:ratio1h{{{SEL}}}"),
                        "{{tag}} last hour",
                        ref="B",
                    )
                ),
                *NOT_DELIVERED_THRESHOLDS,
            )
        )
        .with_panel(
            graph(
                26,
                "Delivery reports per minute",
                per_tag(f"tag:sms_messages_final:delta15m{{{SEL}}}") + " / 15",
                "{{tag}}",
                "Final delivery reports each tag received per minute (over the last 15 "
                "minutes): the volume behind the shares. The alerts need 50 reports in their "
                "window.",
            )
        )
        .with_panel(
            per_tag_stat(
                4,
                "Waiting",
                per_tag(f"tag:sms_messages_waiting:sum{{{SEL}}}"),
                "Messages of each tag still waiting for their delivery report (reports can "
                "take up to 48 hours; some never come).",
            )
        )
        .with_panel(
            per_tag_stat(
                5,
                "STOP opt-outs",
                per_tag(f"sms_stop_total{{{SEL}}}"),
                "Messages of each tag whose recipient replied STOP.",
            )
        )
        .with_panel(
            graph(
                7,
                "Messages by status",
                per_tag(f"sms_status_total{{{SEL}}}", by="tag, status"),
                "{{tag}} {{status}}",
                "Messages of each tag in each delivery status, stacked.",
                stacked=True,
                span=16,
            )
        )
        .with_panel(
            heatmap.Panel()
            .id(27)
            .title("Waiting messages by time since sending")
            .description(
                "How long ago the messages still Waiting for their report were sent, over the "
                "selected tags (the sms_waiting_age_seconds buckets: up to 1 min, 5 min ... "
                "48 h, and older or of unknown date). Reports take seconds: a band that fills "
                "above 30 min means reports stopped coming."
            )
            .datasource(DATASOURCE)
            .with_target(
                query(
                    "sum by (le) ("
                    + per_tag(f"sms_waiting_age_seconds_bucket{{{SEL}}}", by="tag, le")
                    + ")",
                    "{{le}}",
                ).format(prom_model.PromQueryFormat.HEATMAP)
            )
            .calculate(False)
            .span(12)
            .height(8)
        )
        .with_panel(
            dashed(
                graph(
                    28,
                    "Recent messages still Waiting",
                    per_tag(f"tag:sms_waiting_30m_3h:ratio{{{SEL}}}"),
                    "{{tag}}",
                    "Share of the messages sent 30 minutes to 3 hours ago that are still "
                    "Waiting for their report; the dashed line is the 20% of the "
                    "SmsMessagesStuckWaiting alert (which also needs 50 such messages). Empty "
                    "for a tag Prometheus has known for less than 3 hours (unless it started "
                    "with its first reports).",
                    unit="percentunit",
                ),
                (None, "green"),
                (STUCK_SHARE, "orange"),
            )
        )
        .with_panel(
            graph(
                8,
                "Waiting over time",
                per_tag(f"tag:sms_messages_waiting:sum{{{SEL}}}"),
                "{{tag}}",
                "Messages still Waiting for their delivery report (reports can take up to 48 "
                "hours).",
            )
        )
        .with_panel(
            graph(
                9,
                "STOP opt-outs over time",
                per_tag(f"sms_stop_total{{{SEL}}}"),
                "{{tag}}",
                "Messages of each tag whose recipient replied STOP.",
            )
        )
        .with_panel(
            graph(
                17,
                "Oldest Waiting message",
                per_tag(f"time() - sms_oldest_waiting_timestamp_seconds{{{SEL}}}"),
                "{{tag}}",
                "How long ago the oldest message of each tag still Waiting for its report "
                "was sent (its `date`, which for a Waiting message is the send time); no "
                "line when nothing waits. On a long-lived tag it is usually a message that "
                "will never get a report: the stuck alert looks at recent messages instead.",
                unit="s",
            )
        )
        .with_panel(
            graph(
                18,
                "Time since last send or report",
                per_tag(f"time() - sms_last_status_timestamp_seconds{{{SEL}}}"),
                "{{tag}}",
                "How long ago each tag's newest `date` was: its latest send or delivery report. "
                "Growing steadily: the campaign is over (or nothing reaches SMS Partner).",
                unit="s",
            )
        )
        .with_row(d.Row("Account").id(20))
        .with_panel(
            account_stat(
                21,
                "Credit left",
                f"sms_account_credits{{{ACCOUNT_SEL}}}",
                "{{kind}}",
                "Credits left on the SMS Partner account, by kind (sms, sms_eco, hlr…). Needs "
                "`account: {enabled: true}` in the exporter's configuration.",
            )
            .unit("short")
            .decimals(0)
        )
        .with_panel(
            account_stat(
                22,
                "Hours of credit left",
                f"clamp_min(clamp_max(\n"
                f"  sms_account_credits{{{ACCOUNT_SEL}}}\n"
                f"    / (account:sms_account_credits_spent:rate6h{{{ACCOUNT_SEL}}} > 0) / 3600\n"
                f"  or (sms_account_credits{{{ACCOUNT_SEL}}} > 0) * 0 + {CREDIT_HOURS_CAP}\n"
                f"  or sms_account_credits{{{ACCOUNT_SEL}}} * 0,\n"
                f"  {CREDIT_HOURS_CAP}\n), 0)",
                "{{kind}}",
                "How long each kind of credit lasts at the spending rate of the last 6 hours "
                "(top-ups left out). Red below 24 h: the SmsAccountCreditRunningOut alert; 0 "
                'when none is left (SmsAccountCreditExhausted). "Not being spent": the credit '
                "did not fall over 6 hours (or lasts more than a year).",
            )
            .unit("h")
            .decimals(1)
            .thresholds(
                thresholds(
                    (None, "red"), (CREDIT_HOURS_LOW, "orange"), (3 * CREDIT_HOURS_LOW, "green")
                )
            )
            .mappings(
                [
                    model.RangeMap(
                        options=model.DashboardRangeMapOptions(
                            from_val=CREDIT_HOURS_CAP,
                            to=CREDIT_HOURS_CAP,
                            result=model.ValueMappingResult(
                                text="not being spent", color="green", index=0
                            ),
                        )
                    )
                ]
            )
        )
        .with_panel(
            account_stat(
                23,
                "Balance",
                f"sms_account_balance{{{ACCOUNT_SEL}}}",
                "{{currency}}",
                "Money left on the SMS Partner account, by currency.",
            )
            .unit("short")
            .decimals(2)
            .span(4)
        )
        .with_panel(
            graph(
                24,
                "Credit over time",
                f"sms_account_credits{{{ACCOUNT_SEL}}}",
                "{{kind}}",
                "Credits left by kind: the slope is the spending, a jump up a top-up.",
                span=8,
            ).height(6)
        )
        .with_row(d.Row("Exporter health").id(10))
        .with_panel(
            state_stat(
                11,
                "Collection up",
                f"sms_up{{{SEL}}}",
                "Whether the last collection of each tag from the SMS Partner API succeeded.",
                {"0": ("DOWN", "red"), "1": ("UP", "green")},
            )
        )
        .with_panel(
            state_stat(
                12,
                "Collection complete",
                f"sms_collection_complete{{{SEL}}}",
                "Whether the last successful collection read every page of the tag (cut short: "
                "its counts are a lower bound; see sms_collection_truncations_total).",
                {"0": ("CUT SHORT", "orange"), "1": ("COMPLETE", "green")},
            )
        )
        .with_panel(
            graph(
                13,
                "Time since last successful collection",
                f"time() - sms_last_success_timestamp_seconds{{{SEL}}}",
                "{{tag}}",
                "Age of each tag's counts.",
                unit="s",
                span=8,
            )
        )
        .with_panel(
            graph(
                14,
                "Collection duration",
                f"sms_scrape_duration_seconds{{{SEL}}}",
                "{{tag}}",
                "Seconds the last collection round of each tag took.",
                unit="s",
                span=8,
            )
        )
        .with_panel(
            graph(
                15,
                "API errors by reason",
                f"sum by (tag, reason) (increase(sms_api_errors_total{{{SEL}}}[$__rate_interval]))",
                "{{tag}} {{reason}}",
                "Failed collections per tag and reason (api_code_10: the API key was rejected).",
                span=8,
            )
        )
        .with_panel(
            graph(
                16,
                "API requests per second",
                'sum by (instance) (rate(sms_api_requests_total{job=~"$job", '
                'instance=~"$instance"}[$__rate_interval]))',
                "{{instance}}",
                "HTTP requests sent to SMS Partner by each exporter, retries included.",
                unit="reqps",
                span=8,
            )
        )
        .with_panel(
            graph(
                41,
                "Pages read and reused per second",
                f"sum by (tag) (rate(sms_collection_pages_fetched_total{{{SEL}}}"
                "[$__rate_interval]))",
                "{{tag}} read",
                "Incremental collection: pages of each tag asked from the API per second. A "
                "steady tag asks for its new pages, the pages still waiting for reports and a "
                "small audit; the rest is reused (see docs/api-reading.md).",
                unit="reqps",
                span=8,
            ).with_target(
                query(
                    f"sum by (tag) (rate(sms_collection_pages_reused_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{tag}} reused",
                ).ref_id("B")
            )
        )
        .with_panel(
            titled(
                stat.Panel(),
                42,
                "Listing order and first read",
                "Listing order detected per tag (unknown until the tag grows; whole: the listing "
                "moves messages, so the tag is read whole) and how far its first complete read "
                "is (100%: done; before, the tag exports no counts).",
                query(
                    f"max by (tag, order) (sms_collection_listing_order{{{SEL}}}) * on (tag) "
                    f"group_left max by (tag) (sms_collection_first_read_ratio{{{SEL}}})",
                    "{{tag}}: {{order}}",
                    instant=True,
                ),
            )
            .color_mode(common.BigValueColorMode.VALUE)
            .graph_mode(common.BigValueGraphMode.NONE)
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .reduce_options(last_value())
            .unit("percentunit")
            .span(8)
            .height(8)
        )
        .with_panel(
            graph(
                43,
                "Fallbacks to whole reads",
                f"sum by (tag, reason) (increase(sms_collection_fallbacks_total{{{SEL}}}"
                "[$__rate_interval])) or sum by (tag) "
                f"(sms_collection_listing_order{{{SEL}}}) * 0",
                "{{tag}} {{reason}}",
                "Times a tag's page state was dropped and the tag read whole (a page read again "
                "contradicted what was kept, messages removed, page size changed); 0 when none.",
                span=8,
            )
        )
    )
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {PATH.name}")
    mode.add_argument("--check", action="store_true", help="fail if the committed JSON drifted")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        PATH.write_text(text, encoding="utf-8")
    elif args.check:
        if not PATH.exists() or PATH.read_text(encoding="utf-8") != text:
            print(
                f"{PATH} is out of date: run python grafana/dashboard.py --write", file=sys.stderr
            )
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
