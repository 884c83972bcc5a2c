"""No models. The module exists because Django sends ``post_migrate`` only to apps that
have a models module, and this app's handler (:func:`admin_django.support.apps.
ensure_support_groups`) creates the support groups on that signal."""
