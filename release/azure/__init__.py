"""Everything that talks to Azure from ``release/``: one place for credentials and SDK clients.

``clients.py`` builds the credential and the official SDK clients (azure-ai-ml ``MLClient``,
azure-mgmt-web ``WebSiteManagementClient``, an azure-core pipeline for plain HTTP such as a slot warm-up)
from the environment config, with one seam (:class:`AzureContext`) to inject
an azure-core transport, which is how the tests check the exact REST requests at the HTTP boundary.
``names.py`` gives release the resource names of :mod:`infra.naming` (one naming for both halves).
``online.py`` is the Azure ML online endpoint target shared by the managed and Kubernetes targets.
``storage.py`` uploads and reads content-addressed blobs on the workspace datastore (identity only).

Users of this package: ``release/targets/{managed,kubernetes,appservice}.py``,
``release/registry/azureml.py`` and ``release/engine/azure_runs.py``.
"""
