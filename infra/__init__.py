"""Infrastructure as code: one CDKTF stack per Azure environment, built from ``release.config``.

``infra.app.synth`` writes ``cdktf.out/stacks/<env>/cdk.tf.json``; ``infra.scan`` runs the
checkov policy gate on it; ``infra.terraform`` runs ``terraform init/plan/apply`` on it.
"""
