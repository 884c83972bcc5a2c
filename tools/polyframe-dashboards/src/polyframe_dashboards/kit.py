"""What every dashboard shares: selectors with the variables, panels, variables, annotations.

Every dashboard is templated by ``datasource``, ``namespace`` (``label_values(polyframe_build_info,
namespace)``), ``service`` (the ``service_name`` label) and ``instance`` (the scrape target: a
pod in a cluster, a process locally); the cluster dashboard filters by ``pod`` instead. Every
selector says ``namespace=~"$namespace"``; every Polyframe series ``service_name=~"$service"``;
every raw (not recorded) Polyframe series ``instance=~"$instance"`` too. A recorded series is
already summed over instances, so the instance filter cannot reach it: panels that must follow
the instance choice read the raw series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import heatmap as heatmap_builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")

NS = 'namespace=~"$namespace"'
SERVICE = 'service_name=~"$service"'
INSTANCE = 'instance=~"$instance"'
#: The label values of the variables, from a series every Polyframe process exposes.
NAMESPACES = "label_values(polyframe_build_info, namespace)"
SERVICES = f"label_values(polyframe_build_info{{{NS}}}, service_name)"
INSTANCES = f"label_values(polyframe_build_info{{{NS}, {SERVICE}}}, instance)"


@dataclass(frozen=True)
class Framework:
    """One row of the comparison: a framework and the service that runs on it."""

    framework: str
    service: str
    label: str


#: The per-framework table: every comparison panel has one series per row of it.
FRAMEWORKS = (
    Framework("fastapi", "users-fastapi", "FastAPI"),
    Framework("flask", "legacy-flask", "Flask"),
    Framework("django", "admin-django", "Django"),
)


def raw(metric: str, *matchers: str) -> str:
    """A raw Polyframe series, filtered by every variable."""
    return f"{metric}{{{', '.join((NS, SERVICE, INSTANCE, *matchers))}}}"


def rec(metric: str, *matchers: str) -> str:
    """A recorded series (summed over instances): namespace and service only."""
    return f"{metric}{{{', '.join((NS, SERVICE, *matchers))}}}"


def quantile(q: str, bucket: str, by: str, *matchers: str) -> str:
    """``histogram_quantile`` of a raw histogram over ``$__rate_interval``."""
    return (
        f"histogram_quantile({q}, sum by (le, {by}) "
        f"(rate({raw(bucket, *matchers)}[$__rate_interval])))"
    )


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


def q(expr: str, legend: str = "", *, instant: bool = False) -> Query:
    return Query(expr, legend, instant)


def _targets(queries: Sequence[Query]) -> list[Builder[Any]]:
    built: list[Builder[Any]] = []
    for ref, query in zip("ABCDEFGHIJ", queries, strict=False):
        target = (
            prometheus.Dataquery()
            .datasource(DATASOURCE)
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(ref)
        )
        built.append(target.instant() if query.instant else target.range())
    return built


def _thresholds(steps: Iterable[tuple[float | None, str]]) -> builders.ThresholdsConfig:
    return (
        builders.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for value, color in steps])
    )


def ts(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    width: int = 8,
    height: int = 8,
    threshold: float | None = None,
    bars: bool = False,
    maximum: float | None = None,
    points: bool = False,
) -> timeseries.Panel:
    """A time-series panel; the y-axis starts at 0 and the legend is a table."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .unit(unit)
        .span(width)
        .height(height)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .fill_opacity(60 if bars else 10)
        .line_width(1)
        .show_points(common.VisibilityMode.ALWAYS if points else common.VisibilityMode.NEVER)
        .span_nulls(False)
        .axis_soft_min(0)
        .thresholds(
            _thresholds([(None, "green")] + ([(threshold, "red")] if threshold is not None else []))
        )
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE
                if threshold is not None
                else common.GraphThresholdsStyleMode.OFF
            )
        )
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if maximum is not None:
        panel = panel.max(maximum)
    return panel


def single(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    width: int = 8,
    height: int = 5,
    steps: Sequence[tuple[float | None, str]] = ((None, "blue"),),
    mappings: Sequence[models.ValueMapping] = (),
) -> stat.Panel:
    """A stat panel: the last value, big, with its recent trend."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .unit(unit)
        .span(width)
        .height(height)
        .thresholds(_thresholds(steps))
        .mappings(list(mappings))
        .reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields("")
        )
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .text_mode(common.BigValueTextMode.AUTO)
    )


def ranking(
    title: str, description: str, queries: Sequence[Query], *, width: int = 8, height: int = 8
) -> bargauge.Panel:
    """Horizontal bars of an instant query: a ranking (the routes to fix first)."""
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .span(width)
        .height(height)
        .min(0)
        .thresholds(_thresholds([(None, "green"), (1, "red")]))
        .reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields("")
        )
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .show_unfilled(True)
    )


def up_down() -> list[models.ValueMapping]:
    return [
        models.ValueMap(
            options={
                "0": models.ValueMappingResult(text="DOWN", color="red"),
                "1": models.ValueMappingResult(text="UP", color="green"),
            }
        )
    ]


def heat(
    title: str, description: str, expr: str, *, width: int = 12, height: int = 8
) -> heatmap_builders.Panel:
    """A heatmap of a histogram's buckets (already ``sum by (le)``)."""
    target = (
        prometheus.Dataquery()
        .datasource(DATASOURCE)
        .expr(expr)
        .legend_format("{{le}}")
        .format(prometheus_models.PromQueryFormat.HEATMAP)
        .ref_id("A")
        .range()
    )
    return (
        heatmap_builders.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(target)
        .span(width)
        .height(height)
        .calculate(False)
        .cell_gap(1)
        .color(
            heatmap_builders.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .steps(64)
        )
        .y_axis(heatmap_builders.YAxisConfig().unit("s"))
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
    )


def row(title: str) -> builders.Row:
    return builders.Row(title).collapsed(False)


Item = builders.Row | Builder[models.Panel]


def _query_variable(name: str, label: str, query: str) -> builders.QueryVariable:
    return (
        builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .multi(True)
        .include_all(True)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
    )


def variables(*, cluster: bool = False) -> list[Builder[models.VariableModel]]:
    """datasource, namespace, service, and instance (pod on the cluster dashboard).

    ``All`` of namespace and service is ``.+`` (any value); ``All`` of instance and pod is the
    list of the options, so it follows the service chosen.
    """
    last = (
        _query_variable(
            "pod",
            "Pod",
            f'label_values(kube_pod_info{{{NS}, pod=~".*$service.*"}}, pod)',
        )
        if cluster
        else _query_variable("instance", "Pod / instance", INSTANCES)
    )
    return [
        builders.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        _query_variable("namespace", "Namespace", NAMESPACES).all_value(".+"),
        _query_variable("service", "Service", SERVICES).all_value(".+"),
        last,
    ]


def deploy_annotations() -> list[Builder[models.AnnotationQuery]]:
    """Deploys and restarts on every time series: a new build_info series is a new version
    or a new process (a pod locally keeps its instance, a new pod gets a new one)."""
    build_info = rec("polyframe_build_info")
    return [
        builders.AnnotationQuery()
        .name("Deploys (new version or process)")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .expr(
            f"count by (service_name, version) ({build_info} unless {build_info} offset 1m)",
        ),
        builders.AnnotationQuery()
        .name("Restarts (cold start measured again)")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("rgba(255, 152, 48, 1)")
        .expr(
            f"count by (service_name) (changes({rec('polyframe_cold_start_seconds')}[1m]) > 0)",
        ),
    ]


def dashboard(
    uid: str,
    title: str,
    description: str,
    tags: Sequence[str],
    items: Sequence[Item],
    *,
    cluster: bool = False,
) -> models.Dashboard:
    board = (
        builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["polyframe", *tags])
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .variables(variables(cluster=cluster))
        .annotations(deploy_annotations())
        .link(
            builders.DashboardLink("Polyframe dashboards")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(["polyframe"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
            .icon("external link")
        )
    )
    for item in items:
        board = board.with_row(item) if isinstance(item, builders.Row) else board.with_panel(item)
    built = board.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built


def events(metric: str, window: str = "5m", *matchers: str) -> str:
    """Increments of a raw counter over ``window``, counting a series born inside it in full.

    ``increase()`` never counts a series' first sample, and a labelled counter has no series
    before its first increment: the first worker timeout or loop error would stay invisible.
    """
    series = raw(metric, *matchers)
    return f"(({series} unless {series} offset {window}) or increase({series}[{window}]))"


def or_zero(expr: str, by: str, present: str) -> str:
    """``expr``, or 0 for every ``by`` group of ``present`` (a series that always exists): a
    counter never incremented has no series, and "no data" must mean "not scraped"."""
    return f"{expr} or sum by ({by}) ({present}) * 0"
