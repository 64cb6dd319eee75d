"""Infrastructure as code: one CDKTF stack per Azure environment, built from ``release.config``.

``infra.app.synth`` writes ``cdktf.out/stacks/<env>/cdk.tf.json``; ``infra.scan`` runs the
checkov policy gate on it; ``infra.terraform`` runs ``terraform init/plan/apply`` on it.
"""

import os as _os

# jsii (node) prints an end-of-life banner for node 20 on every start; the version is known.
_os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
