"""The sending core: jobs, per-recipient state, storage, the background worker. Knows nothing of Slack."""
