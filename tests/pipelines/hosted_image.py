"""What the Microsoft-hosted ``ubuntu-24.04`` image documents as installed (the subset we rely on).

Source: actions/runner-images, ``images/ubuntu/Ubuntu2404-Readme.md`` at commit
749514466b4f51b7dc8d9f1cda62257dcf13d183 (image version 20260816.277.1), which is the image of
both GitHub-hosted ``ubuntu-24.04`` runners and Azure DevOps Microsoft-hosted ``ubuntu-24.04``
agents: https://github.com/actions/runner-images/blob/main/images/ubuntu/Ubuntu2404-Readme.md

Terraform is NOT on it (removed: actions/runner-images#10796, #13335), nor ``docker-registry``.
The agent runs as a non-root user with passwordless ``sudo`` (``sudo`` is in the image's
"Installed apt packages").
"""

from __future__ import annotations

SOURCE = (
    "https://github.com/actions/runner-images/blob/749514466b4f51b7dc8d9f1cda62257dcf13d183/"
    "images/ubuntu/Ubuntu2404-Readme.md"
)

# program -> the line of the readme that documents it
DOCUMENTED: dict[str, str] = {
    "bash": "Language and Runtime: Bash 5.2.21",
    "sh": "Language and Runtime: Dash 0.5.12",
    "python3": "Language and Runtime: Python 3.12.3 (3.11.16 in Cached Tools, UsePythonVersion/setup-python)",
    "python": "Installed apt packages: python-is-python3",
    "git": "Tools: Git 2.55.0",
    "docker": "Tools: Docker Client 28.0.4, Docker Server 28.0.4",
    "jq": "Tools: jq 1.7",
    "openssl": "Tools: OpenSSL 3.0.13",
    "skopeo": "Tools: Skopeo 1.13.3",
    "podman": "Tools: Podman 5.8.4",
    "buildah": "Tools: Buildah 1.33.7",
    "az": "CLI Tools: Azure CLI 2.89.1",
    "gh": "CLI Tools: GitHub CLI 2.97.0",
    "nginx": "Web Servers: nginx 1.24.0",
    "make": "Installed apt packages: make 4.3",
    "curl": "Installed apt packages: curl",
    "sudo": "Installed apt packages: sudo",
    "tar": "Installed apt packages: tar",
    "unzip": "Installed apt packages: unzip",
    "rsync": "Installed apt packages: rsync",
    "dpkg": "Installed apt packages: dpkg",
    "apt-get": "Ubuntu 24.04 LTS base system",
}

# coreutils/findutils & co (Installed apt packages: coreutils, findutils; base system)
BASE_SYSTEM = [
    "awk",
    "basename",
    "cat",
    "chmod",
    "cp",
    "cut",
    "date",
    "dirname",
    "echo",
    "env",
    "false",
    "find",
    "grep",
    "head",
    "id",
    "install",
    "ln",
    "ls",
    "mkdir",
    "mktemp",
    "mv",
    "printf",
    "readlink",
    "realpath",
    "rm",
    "sed",
    "sleep",
    "sort",
    "tail",
    "tee",
    "test",
    "touch",
    "tr",
    "true",
    "uname",
    "wc",
    "xargs",
]

NOT_ON_IMAGE = ("terraform", "docker-registry")


def tools() -> set[str]:
    """Every program a step may call without installing it first."""
    return set(DOCUMENTED) | set(BASE_SYSTEM)
