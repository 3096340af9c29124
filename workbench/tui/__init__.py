"""The Textual workbench: a window onto a running Machine (panes read snapshots, keys send commands)."""
