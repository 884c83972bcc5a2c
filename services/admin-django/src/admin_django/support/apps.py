from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate


def ensure_support_groups(
    *, apps: Apps = global_apps, using: str = DEFAULT_DB_ALIAS, **_kwargs: Any
) -> None:
    """The two support groups exist after every migrate, both allowed to view the audit trail.

    As a ``post_migrate`` handler it gets the migrated state's ``apps`` and the database
    (``using``); without the auth app in that state (``migrate audit`` on an empty
    database) there is nothing to do yet.
    """
    from admin_django.support.roles import ACTING, READ_ONLY

    try:
        group_model = apps.get_model("auth", "Group")
        permission_model = apps.get_model("auth", "Permission")
    except LookupError:
        return
    view_audit = (
        permission_model.objects.using(using)
        .filter(codename="view_auditevent", content_type__app_label="audit")
        .first()
    )
    for name in (READ_ONLY, ACTING):
        group, _ = group_model.objects.using(using).get_or_create(name=name)
        if view_audit is not None:
            group.permissions.add(view_audit)


class SupportConfig(AppConfig):
    name = "admin_django.support"
    label = "support"
    verbose_name = "Support console"

    def ready(self) -> None:
        from django.conf import settings

        # Every process says it at start (each gunicorn worker, each management command).
        warning = settings.CONFIG.insecure_cookies_warning()
        if warning:
            logging.getLogger("admin_django.support").warning(warning)
        # After the audit app's permissions are created: post_migrate is sent app by app in
        # INSTALLED_APPS order (audit before support), and only to apps with a models module
        # (hence support/models.py).
        post_migrate.connect(ensure_support_groups, sender=self)
