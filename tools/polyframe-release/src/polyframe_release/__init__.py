"""Polyframe's release without a cluster: images built with podman (or docker), and the kind
release's rendered objects run as real containers, as a cluster would run them."""
