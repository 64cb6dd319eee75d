"""One construct per module; each takes typed config and exposes what others need."""
