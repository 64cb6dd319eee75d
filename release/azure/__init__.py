"""Everything that talks to Azure from ``release/``: one place for credentials and SDK clients.

``clients.py`` builds the credential and the official SDK clients (azure-ai-ml ``MLClient``,
azure-mgmt-web ``WebSiteManagementClient``, azure-core pipelines for plain REST calls such as the
ACR token exchange) from the environment config, with one seam (:class:`AzureContext`) to inject
an azure-core transport, which is how the tests check the exact REST requests at the HTTP boundary.
``names.py`` holds the Azure resource names derived from the config (shared with ``infra/``).
``online.py`` is the Azure ML online endpoint target shared by the managed and Kubernetes targets.
"""
