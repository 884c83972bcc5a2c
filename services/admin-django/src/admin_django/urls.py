from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from admin_django.audit import drills
from admin_django.audit.api import AuditEventsApi
from admin_django.audit.openapi import openapi_view

admin.site.site_header = "Polyframe support"
admin.site.site_title = "Polyframe support"
admin.site.index_title = "Support console and audit trail"

urlpatterns = [
    path("api/audit/events", AuditEventsApi.as_view(), name="audit-events"),
    path("api/audit/openapi.json", openapi_view, name="audit-openapi"),
    path("admin/support/", include("admin_django.support.urls")),
    path("admin/", admin.site.urls),
]

if settings.CONFIG.drills:
    urlpatterns[:0] = [
        path("api/audit/_drills/n-plus-one", drills.n_plus_one),
        path("api/audit/_drills/slow", drills.slow),
    ]
