"""The Slack side: Bolt listeners, Block Kit views, the reporter. Thin: parse, call the core, render."""
