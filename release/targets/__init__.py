"""Deployment targets behind one interface (:class:`release.targets.base.Target`)."""
