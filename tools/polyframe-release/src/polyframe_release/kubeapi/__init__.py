"""The release's live state through the part of the Kubernetes API its readers use (tests/e2e's
cluster plugin through the official client, and ``kubectl get``), served over real HTTP(S).
"""
