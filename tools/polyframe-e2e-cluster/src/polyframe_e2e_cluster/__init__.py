"""tests/e2e in cluster mode: a pytest plugin that reads a Helm release of Polyframe through
the official ``kubernetes`` client (see README.md).
"""
