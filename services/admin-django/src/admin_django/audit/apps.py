from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "admin_django.audit"
    label = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Runs in each gunicorn worker (no preload) before the handler loads the middleware.
        from django.conf import settings

        from service_kit import django as kit

        kit.instrument(settings.CONFIG)
