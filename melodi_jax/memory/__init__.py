"""Memory kinds: what each layer carries from one window to the next, and how it reads/writes it."""
