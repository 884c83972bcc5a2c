"""Polyframe's Grafana dashboards as code, with grafana-foundation-sdk: one module per
dashboard, rendered by :func:`polyframe_dashboards.cli.render` into
``observability/grafana/dashboards/<uid>.json`` (``make dashboards``)."""
